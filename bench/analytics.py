"""How long the analytics and state-history views take over a large synthetic archive.

    python bench/analytics.py                      # 10M events, 200k flow runs (about 2 GB of disk)
    python bench/analytics.py --events 1000000 --flow-runs 20000 --db /tmp/small.duckdb

The archive is made by the real migrations, then filled in bulk with SQL: flow runs spread over
90 days across 200 deployments (85% completed, 10% failed, 3% crashed, 2% cancelled; 5% start 15 s
or more late), four state-change events per flow run shaped like Prefect's, three per task run
for the task-run events, and the rest custom events. Each view is queried the way a user would
(the whole view, and one run's history by id), through a read-only connection with the
reader settings the `sql` command uses; figures are wall-clock seconds, best of --repeat.
The default --db is kept: run again without --rebuild to time the queries only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archiver.storage.duckdb.connect import NO_EXTENSIONS  # noqa: E402
from archiver.storage.duckdb.console import SQL_CONFIG  # noqa: E402
from archiver.storage.duckdb.writer import DuckDBWriter  # noqa: E402

FILL = """
INSERT INTO work_pools
SELECT uuid(), 'pool-' || i, 'process', 'READY', false, TIMESTAMPTZ '2026-01-01', TIMESTAMPTZ '2026-01-01', '{}', now()
FROM range(5) t(i);

INSERT INTO flows
SELECT uuid(), 'flow-' || i, [], TIMESTAMPTZ '2026-01-01', TIMESTAMPTZ '2026-01-01', '{}', now() FROM range(50) t(i);

CREATE TEMP TABLE f AS SELECT row_number() OVER () - 1 AS n, id, name FROM flows;
CREATE TEMP TABLE p AS SELECT row_number() OVER () - 1 AS n, name FROM work_pools;

INSERT INTO deployments
SELECT uuid(), 'deployment-' || i, f.id, p.name, 'default', false, 'READY', [], TIMESTAMPTZ '2026-01-01',
       TIMESTAMPTZ '2026-01-01', '{}', now()
FROM range(200) t(i) JOIN f ON f.n = i % 50 JOIN p ON p.n = i % 5;

CREATE TEMP TABLE d AS SELECT row_number() OVER () - 1 AS n, id, flow_id, work_pool_name FROM deployments;

CREATE TEMP TABLE runs AS
SELECT
    uuid() AS id, i, d.id AS deployment_id, d.flow_id, d.work_pool_name,
    TIMESTAMPTZ '2026-08-01' + to_microseconds((i * 38880000)::BIGINT) AS expected,  -- 200k runs over 90 days
    CASE WHEN random() < 0.05 THEN 15 + random() * 600 ELSE random() * 3 END AS lag,
    1 + random() * random() * 900 AS duration,
    CASE WHEN r < 0.85 THEN 'COMPLETED' WHEN r < 0.95 THEN 'FAILED' WHEN r < 0.98 THEN 'CRASHED'
         ELSE 'CANCELLED' END AS state_type
FROM (SELECT i, random() AS r FROM range($flow_runs) t(i)) s
JOIN d ON d.n = s.i % 200;

INSERT INTO flow_runs
SELECT id, 'run-' || i, flow_id, deployment_id, NULL, work_pool_name, 'default', NULL,
       state_type, (state_type[1] || lower(state_type[2:])), expected + to_microseconds(((lag + duration) * 1e6)::BIGINT), 1,
       expected, expected + to_microseconds((lag * 1e6)::BIGINT),
       expected + to_microseconds(((lag + duration) * 1e6)::BIGINT), duration, [], '{}', expected, expected,
       '{}', now()
FROM runs;

-- Four state-change events per flow run: Scheduled, Pending, Running, and how it ended.
INSERT INTO events
SELECT
    uuid(), occurred, occurred, 'prefect.flow-run.' || state_name, 'prefect.flow-run.' || id,
    json_object('prefect.resource.id', 'prefect.flow-run.' || id, 'prefect.resource.name', 'run-' || i,
                'prefect.state-message', '', 'prefect.state-name', state_name,
                'prefect.state-timestamp', strftime(occurred, '%Y-%m-%dT%H:%M:%S.%f+00:00'), 'prefect.state-type', state_type),
    json_array(json_object('prefect.resource.id', 'prefect.flow.' || flow_id, 'prefect.resource.role', 'flow'),
               json_object('prefect.resource.id', 'prefect.deployment.' || deployment_id, 'prefect.resource.role', 'deployment')),
    json_object('intended', json_object('from', NULL, 'to', state_type),
                'validated_state', json_object('type', state_type, 'name', state_name, 'message', message)),
    NULL, 'x', now()
FROM (
    SELECT runs.*, s.state_type, s.state_name, s.message,
           expected + to_microseconds(((s.k = 3)::INT * (lag + duration) * 1e6 + s.k)::BIGINT) AS occurred
    FROM runs, LATERAL (VALUES
        (0, 'SCHEDULED', 'Scheduled', NULL), (1, 'PENDING', 'Pending', NULL), (2, 'RUNNING', 'Running', NULL),
        (3, runs.state_type, (runs.state_type[1] || lower(runs.state_type[2:])),
         CASE WHEN runs.state_type = 'FAILED' THEN 'Flow run encountered an exception: ValueError: bad input' END)
    ) s(k, state_type, state_name, message)
);

-- Task-run state events (Pending, Running, Completed), three per task run.
INSERT INTO events
SELECT
    uuid(), occurred, occurred, 'prefect.task-run.' || state_name, 'prefect.task-run.' || task_run,
    json_object('prefect.resource.id', 'prefect.task-run.' || task_run, 'prefect.resource.name', 'task-' || t,
                'prefect.state-message', '', 'prefect.state-name', state_name,
                'prefect.state-timestamp', strftime(occurred, '%Y-%m-%dT%H:%M:%S.%f+00:00'),
                'prefect.state-type', upper(state_name), 'prefect.orchestration', 'client'),
    json_array(json_object('prefect.resource.id', 'prefect.flow-run.' || run, 'prefect.resource.role', 'flow-run')),
    json_object('validated_state', json_object('type', upper(state_name), 'name', state_name, 'message', '')),
    NULL, 'x', now()
FROM (
    SELECT t, task_run, runs.id AS run, s.state_name,
           runs.expected + to_microseconds(((runs.lag + s.k) * 1e6)::BIGINT) AS occurred
    FROM (SELECT t, uuid() AS task_run FROM range($task_runs) tr(t)) tr
    JOIN runs ON runs.i = t % $flow_runs,
    LATERAL (VALUES (0, 'Pending'), (1, 'Running'), (2, 'Completed')) s(k, state_name)
);

-- The rest: events the user's own code emits.
INSERT INTO events
SELECT uuid(), occurred, occurred, 'acme.orders.' || (['created', 'paid', 'shipped'])[1 + i % 3],
       'acme.order.' || i, json_object('prefect.resource.id', 'acme.order.' || i), '[]',
       json_object('amount', i % 1000), NULL, 'x', now()
FROM (SELECT i, TIMESTAMPTZ '2026-08-01' + to_microseconds((i * 777600000000 // $custom)::BIGINT) AS occurred
      FROM range($custom) t(i));
"""

QUERIES = {
    "flow_run_durations (all runs)": "SELECT * FROM flow_run_durations",
    "deployment_health (all days)": "SELECT * FROM deployment_health",
    "deployment_health (one deployment, 30 days)": (
        "SELECT * FROM deployment_health WHERE deployment_name = 'deployment-7' AND day >= DATE '2026-09-01' "
        "AND day < DATE '2026-10-01'"
    ),
    "event_volume (all hours)": "SELECT * FROM event_volume",
    "late_runs (all)": "SELECT * FROM late_runs",
    "flow_run_states (all)": "SELECT * FROM flow_run_states",
    "flow_run_states (one run)": "SELECT * FROM flow_run_states WHERE flow_run_id = $run ORDER BY timestamp",
    "task_run_states (one task run)": "SELECT * FROM task_run_states WHERE task_run_id = $task ORDER BY timestamp",
}


def build(path: Path, events: int, flow_runs: int) -> None:
    flow_run_events = 4 * flow_runs
    task_runs = max((events - flow_run_events) // 2 // 3, 0)
    custom = events - flow_run_events - 3 * task_runs
    DuckDBWriter(path).close()  # the real migrations
    sql = FILL.replace("$flow_runs", str(flow_runs)).replace("$task_runs", str(task_runs)).replace("$custom", str(custom))
    started = time.perf_counter()
    with duckdb.connect(str(path), config=dict(NO_EXTENSIONS)) as conn:
        conn.execute(sql)
        conn.execute("CHECKPOINT")
    print(f"built {events:,} events ({flow_run_events:,} flow-run, {3 * task_runs:,} task-run, {custom:,} custom) and "
          f"{flow_runs:,} flow runs in {time.perf_counter() - started:.0f}s; file {path.stat().st_size / 1e9:.1f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--flow-runs", type=int, default=200_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/archiver-bench-analytics.duckdb"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true", help="build the archive again even if --db exists")
    args = parser.parse_args()
    if args.rebuild or not args.db.exists():
        args.db.unlink(missing_ok=True)
        build(args.db, args.events, args.flow_runs)
    with duckdb.connect(str(args.db), read_only=True, config=SQL_CONFIG) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
        runs = conn.execute("SELECT count(*) FROM flow_runs").fetchone()[0]  # type: ignore[index]
        run = conn.execute("SELECT id FROM flow_runs WHERE state_type = 'FAILED' LIMIT 1").fetchone()[0]  # type: ignore[index]
        task = conn.execute("SELECT resource_id FROM events WHERE event = 'prefect.task-run.Running' LIMIT 1").fetchone()[0]  # type: ignore[index]
        print(f"archive {args.db}: {events:,} events, {runs:,} flow runs; {os.cpu_count()} CPUs; reader settings {SQL_CONFIG}")
        # "in DuckDB": the result materialized in a temp table; "to Python": fetched as Python objects
        # (what the `sql` command and most scripts pay on top, mostly converting timestamps).
        print(f"{'query':<46} {'rows':>10} {'in DuckDB s':>12} {'to Python s':>12}")
        for name, sql in QUERIES.items():
            sql = sql.replace("$run", f"'{run}'").replace("$task", f"'{task[-36:]}'")
            inside, fetched, rows = [], [], 0
            for _ in range(args.repeat):
                started = time.perf_counter()
                conn.execute(f"CREATE OR REPLACE TEMP TABLE bench_result AS {sql}")
                inside.append(time.perf_counter() - started)
                started = time.perf_counter()
                rows = len(conn.execute(sql).fetchall())
                fetched.append(time.perf_counter() - started)
            print(f"{name:<46} {rows:>10,} {min(inside):>12.2f} {min(fetched):>12.2f}")


if __name__ == "__main__":
    main()

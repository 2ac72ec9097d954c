"""A run workload for run-metadata tests: a work pool, a deployment with runs (one late, one
failing), tasks that retry and fail, and flows run without a deployment."""

RUN_WORKLOAD = '''
import asyncio
import sys
from datetime import datetime, timedelta, timezone

from prefect import flow, get_client, task
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.flow_engine import run_flow
from prefect.states import Scheduled

_attempts = {"flaky": 0}


@task
def add(x: int, y: int) -> int:
    return x + y


@task(retries=1, retry_delay_seconds=0)
def flaky(x: int) -> int:
    _attempts["flaky"] += 1
    if _attempts["flaky"] % 2 == 1:
        raise RuntimeError("the first attempt fails on purpose")
    return x * 2


@task
def broken() -> None:
    raise KeyError("this task fails on purpose")


@flow(name="archiver-nightly")
def nightly(n: int = 3) -> int:
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    total = 0
    for i in range(n):
        total = add(total, i)
    return flaky(total)


@flow(name="archiver-adhoc")
def adhoc() -> None:
    broken()


async def schedule_deployment_runs() -> list:
    """Three runs of one deployment in a work pool: on time, 40 s late, and one that fails."""
    now = datetime.now(timezone.utc)
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name="archiver-pool", type="process"))
        flow_id = await client.create_flow(nightly)
        deployment_id = await client.create_deployment(
            flow_id=flow_id, name="nightly", work_pool_name="archiver-pool", entrypoint="flows.py:nightly"
        )
        runs = []
        for lag, n in ((0, 3), (40, 4), (0, -1)):
            run = await client.create_flow_run_from_deployment(
                deployment_id, state=Scheduled(scheduled_time=now - timedelta(seconds=lag)), parameters={"n": n}
            )
            runs.append(run.id)
        return [await client.read_flow_run(run_id) for run_id in runs]


if __name__ == "__main__":
    for run in asyncio.run(schedule_deployment_runs()):
        try:
            run_flow(nightly, flow_run=run, parameters=run.parameters)
        except ValueError:
            pass
    assert nightly(2) == 2
    try:
        adhoc()
    except KeyError:
        pass
    else:
        sys.exit("the adhoc flow did not fail")
    print("RUN_WORKLOAD_OK")
'''

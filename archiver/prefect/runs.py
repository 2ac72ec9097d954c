"""Prefect's two kinds of run, and every name one goes by in the API, its events and the archive."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunKind:
    """A kind of Prefect run: "flow_run" (run_states.run_kind, the API's ?flow_run_id=) and its other names."""

    name: str
    collection: str  # POST /flow_runs/filter, and the archive's table of run metadata
    states_path: str  # GET /flow_run_states/?flow_run_id=
    resource_prefix: str  # its events' resource ids: prefect.flow-run.<uuid>

    @property
    def words(self) -> str:
        """The kind as a message says it: "flow run"."""
        return self.name.replace("_", " ")


FLOW_RUN = RunKind("flow_run", "flow_runs", "flow_run_states/", "prefect.flow-run.")
TASK_RUN = RunKind("task_run", "task_runs", "task_run_states/", "prefect.task-run.")
# Flow runs first: a task run's flow run is archived before it (ingest.states, lookups by id).
RUN_KINDS = (FLOW_RUN, TASK_RUN)


def run_kind(name: str) -> RunKind:
    """The RunKind named "flow_run" or "task_run"; ValueError for any other name."""
    for kind in RUN_KINDS:
        if kind.name == name:
            return kind
    raise ValueError(f"{name!r} is not a kind of Prefect run (flow_run, task_run)")

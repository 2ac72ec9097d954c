"""The long-running service (`prefect-archiver run`): scheduler, heartbeat, stopping, metrics."""

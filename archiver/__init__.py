"""prefect-archiver: a permanent, queryable DuckDB archive of a Prefect workspace's events."""

__version__ = "0.1.0"

"""HTTP over the archive: `prefect-archiver serve`, Prefect's event read API (needs the serve extra)."""

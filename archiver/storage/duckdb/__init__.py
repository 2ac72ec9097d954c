"""The DuckDB backend: one archive file, one writer at a time, readers between its commits."""

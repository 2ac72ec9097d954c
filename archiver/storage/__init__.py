"""Storage: the archive behind one interface, a writer for ingest and a reader for everything else.

Each backend lives in a subpackage (duckdb/ first); only a backend imports its database driver or
holds SQL.
"""

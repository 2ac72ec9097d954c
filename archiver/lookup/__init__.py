"""The read side: lookups by id (archive first, then the live API), searches, run histories.

Importable inside a flow: no ingest machinery, no web stack.
"""

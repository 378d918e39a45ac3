"""Stores the pipeline reads and writes: exact cache, semantic index (sharing entries.py), Responses
state, idempotency records and BYOK keys; memory first, persisted in the database by the ledger writer."""

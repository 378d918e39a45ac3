"""Stores the pipeline reads and writes: exact cache, semantic index (sharing entries.py), Responses
state; memory first, persisted in the database by the ledger writer."""

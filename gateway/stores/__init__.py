"""Stores the pipeline reads and writes: exact cache, semantic index, Responses state, idempotency
records and BYOK keys (memory first, persisted in the database)."""

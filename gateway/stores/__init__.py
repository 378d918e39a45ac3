"""Stores the pipeline reads and writes: exact cache, semantic index, Responses state (memory first, persisted in the database)."""

"""Data loss prevention engine: pure, no database and no pipeline imports.

- rules.py: the rule catalogue and the actions (redact, mask, block, log).
- detectors.py: one pattern detector per built-in rule (checksums, phones by region, key shapes).
- custom.py: an admin's regular expressions, validated and run with a time budget.
- engine.py: a scope's Policy, scanning, and the per-request placeholder mapping (Redactor).
- walk.py: the texts of a request body per endpoint, rewritten in place.
- restore.py: placeholders back to values in whole bodies and SSE streams.

The pipeline stage is gateway/pipeline/dlp.py; settings writes are gateway/services/dlp.py.
"""

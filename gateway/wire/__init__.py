"""Client dialects: canonical types and per-dialect request/response codecs."""

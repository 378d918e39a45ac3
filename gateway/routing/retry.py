"""Retry timing: exponential backoff with full jitter, `retry-after` honoured, a total deadline."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2  # extra attempts on the same route for a retryable failure
    base_seconds: float = 0.25
    max_seconds: float = 8.0
    deadline_seconds: float = 60.0  # for the whole request, fallbacks included

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """How long to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return rng.uniform(0, min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)))

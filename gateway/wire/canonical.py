"""Canonical types shared by every dialect and provider."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to the provider's prompt cache

    def merge(self, other: Usage | None) -> None:
        """Take the larger of each count: streams report cumulative usage, sometimes more than once."""
        if other is None:
            return
        self.input_tokens = max(self.input_tokens, other.input_tokens)
        self.output_tokens = max(self.output_tokens, other.output_tokens)
        self.cached_tokens = max(self.cached_tokens, other.cached_tokens)
        self.cache_write_tokens = max(self.cache_write_tokens, other.cache_write_tokens)

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

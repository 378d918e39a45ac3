"""Test fakes (fake upstream providers)."""
from .openai_upstream import LEAK_MARKER, FakeOpenAI, serve

__all__ = ["FakeOpenAI", "serve", "LEAK_MARKER"]

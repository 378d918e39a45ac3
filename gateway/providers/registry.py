"""Provider kind -> adapter module (each one the protocol of providers/base.py)."""

from __future__ import annotations

from types import ModuleType

from gateway.errors import UpstreamError
from gateway.providers import anthropic, bedrock, gemini, ollama, openai, openrouter

ADAPTERS: dict[str, ModuleType] = {
    "openai": openai,
    "anthropic": anthropic,
    "openrouter": openrouter,
    "ollama": ollama,
    "gemini": gemini,
    "bedrock": bedrock,
}


def kinds() -> frozenset[str]:
    return frozenset(ADAPTERS)


def adapter(kind: str) -> ModuleType:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise UpstreamError(f"No adapter for provider kind '{kind}'.", retryable=True) from None

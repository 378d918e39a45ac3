"""Validate JSON bodies against OpenAI's published OpenAPI description (vendored in tests/data/openai_spec)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parent / "data" / "openai_spec" / "openapi.yml"
URI = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    """The spec still marks some fields with OpenAPI 3.0's `nullable: true`; treat it as `or null`."""
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@functools.cache
def _registry() -> Registry:
    if not SPEC.exists():
        raise AssertionError(f"OpenAI OpenAPI spec not found at {SPEC}")
    spec = _nullable(yaml.load(SPEC.read_text(), Loader=yaml.CSafeLoader))
    return Registry().with_resource(URI, Resource.from_contents(spec, default_specification=DRAFT202012))


def validate(body: Any, schema_name: str) -> None:
    """Raise jsonschema.ValidationError if `body` does not match components/schemas/<schema_name>."""
    validator = Draft202012Validator({"$ref": f"{URI}#/components/schemas/{schema_name}"}, registry=_registry())
    validator.validate(body)

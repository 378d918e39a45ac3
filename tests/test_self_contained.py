"""A clone is complete: no file in the project reaches for a path outside the repository.

A user's clone has nothing beside it, so a test or script that reads `../something` (or walks
`Path(__file__).parents[...]` above the root) works only on the machine it was written on.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".ini", ".yml", ".yaml", ".json", ".html", ".js", ".css", ".txt", ""}
VENDORED = {"tests/data/openai_spec/openapi.yml",  # third-party data, read as data, not paths
            "tests/test_self_contained.py"}  # this checker: its examples climb on purpose
# A relative path literal that climbs: "../x", '../../x', "..\\x"
CLIMB = re.compile(r"""(?<![\w.])((?:\.\./|\.\.\\)+)([\w.\-/\\]*)""")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / p for p in out.decode().split("\0") if p]
    return [f for f in files if f.is_file() and f.suffix in TEXT_SUFFIXES and
            f.relative_to(ROOT).as_posix() not in VENDORED]


def _escapes(base: Path, rel: str) -> bool:
    target = (base / rel).resolve()
    return target != ROOT and ROOT not in target.parents


def climbing_literals(path: Path, text: str) -> list[str]:
    """Relative path literals that leave the repository, resolved from the file's folder and from the root."""
    found = []
    for m in CLIMB.finditer(text):
        rel = (m.group(1) + m.group(2)).replace("\\", "/")
        if _escapes(path.parent, rel) and _escapes(ROOT, rel):
            found.append(rel)
    return found


def parents_overreach(path: Path, text: str) -> list[int]:
    """`Path(__file__)...parents[N]` (or `.parent` chains) that point above the repository root."""
    depth = len(path.relative_to(ROOT).parts) - 1  # folders between the root and the file
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    bad = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "parents" and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, int) and "__file__" in ast.unparse(node.value)
                and node.slice.value > depth):  # parents[depth] is the root
            bad.append(node.slice.value)
        if isinstance(node, ast.Attribute) and node.attr == "parent" and "__file__" in ast.unparse(node):
            chain = ast.unparse(node).count(".parent")
            if chain > depth + 1:  # .parent once is the file's folder; depth + 1 times is the root
                bad.append(chain)
    return bad


def test_no_file_reads_outside_the_repository():
    offenders = []
    for path in _tracked():
        text = path.read_text(errors="replace")
        rel = path.relative_to(ROOT).as_posix()
        offenders += [f"{rel}: {lit}" for lit in climbing_literals(path, text)]
        if path.suffix == ".py":
            offenders += [f"{rel}: parents[{n}]" for n in parents_overreach(path, text)]
        if re.search(r"(?<![\w-])shared/specs\b", text):
            offenders.append(f"{rel}: shared/specs")
    assert offenders == [], "paths outside the repository:\n" + "\n".join(offenders)


@pytest.mark.parametrize("text, bad", [
    ('SPEC = Path(__file__).resolve().parents[2] / "sha' + 'red" / "x.yml"', True),
    ('SPEC = Path(__file__).resolve().parent / "data" / "x.yml"', False),
    ('DATA = Path(__file__).resolve().parents[1] / "gateway"', False),
    ('open("../' + 'shared/specs/openai-openapi.yml")', True),
    ('open("tests/../gateway/x.py")', False),
])
def test_the_check_catches_what_it_should(text, bad):
    """The scan above would pass on an empty list: prove it flags a climbing path in a test file."""
    path = ROOT / "tests" / "example.py"
    flagged = (climbing_literals(path, text) or parents_overreach(path, text)
               or re.search(r"(?<![\w-])shared/specs\b", text))
    assert bool(flagged) is bad


def test_the_vendored_spec_is_in_the_repository():
    from tests import openapi

    assert openapi.SPEC.is_file() and ROOT in openapi.SPEC.resolve().parents
    notice = (openapi.SPEC.parent / "NOTICE.md").read_text()
    assert "MIT License" in notice and "f85dbe223d40e1a31cba812ab2d755c7e98a92a3" in notice

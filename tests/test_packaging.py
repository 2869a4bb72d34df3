"""pyproject.toml: Titan installs with no runtime dependencies, and ``.[test]`` brings the test tools.

``tomllib`` is Python 3.11+, so the file is also read with a tiny reader that
understands what these checks need (sections, and string or string-array
values); where ``tomllib`` exists, both readings must agree.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

Toml = Dict[str, Dict[str, Any]]


def _strip_comment(line: str) -> str:
    """``line`` without a ``# comment`` that is outside a quoted string."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:i]
    return line


def read_simple_toml(text: str) -> Toml:
    """Section name -> key -> value, for values that are strings or arrays of strings.

    Other values (tables, booleans) are left out.  An array may span lines.
    """
    sections: Toml = {"": {}}
    current = sections[""]
    pending = ""
    for raw in text.splitlines():
        line = _strip_comment(raw).strip()
        if pending:
            pending += " " + line
        elif re.fullmatch(r"\[[^\[\]]+\]", line):
            current = sections.setdefault(line[1:-1].strip(), {})
            continue
        elif "=" in line:
            pending = line
        if pending and pending.count("[") == pending.count("]"):
            key, _, value = pending.partition("=")
            pending = ""
            try:
                current[key.strip().strip('"')] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                pass
    return sections


def requirement_names(requirements: List[str]) -> List[str]:
    return sorted(re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in requirements)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def pyproject() -> Toml:
    text = PYPROJECT.read_text()
    simple = read_simple_toml(text)
    try:
        import tomllib      # type: ignore[import-not-found]  # Python 3.11+
    except ImportError:
        return simple
    full = tomllib.loads(text)
    # the tiny reader sees these keys as tomllib does
    assert simple["project"]["dependencies"] == full["project"]["dependencies"]
    assert simple["project.optional-dependencies"] == full["project"]["optional-dependencies"]
    assert simple["project"]["requires-python"] == full["project"]["requires-python"]
    return simple


def test_the_package_has_no_runtime_dependencies(pyproject: Toml) -> None:
    assert pyproject["project"]["dependencies"] == []
    assert pyproject["project"]["requires-python"] == ">=3.9"


def test_the_test_extra_brings_pytest_and_pytest_cov(pyproject: Toml) -> None:
    extras = pyproject["project.optional-dependencies"]
    assert requirement_names(extras["test"]) == ["pytest", "pytest-cov"], extras


def test_the_simple_reader_reads_sections_multiline_arrays_and_comments() -> None:
    text = ('name = "x"  # a comment\n[project]\ndependencies = [\n  "a>=1",  # why\n  "b",\n]\n'
            'url = "http://h/#frag"\n[tool.x]\nflag = true\n')
    assert read_simple_toml(text) == {"": {"name": "x"}, "project": {"dependencies": ["a>=1", "b"],
                                                                     "url": "http://h/#frag"}, "tool.x": {}}

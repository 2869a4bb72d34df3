"""Enforces Titan's import layering by reading every module under titan/ with ast.

The layers, bottom to top::

    titan.errors, titan.wire, titan.core,  pure: no I/O, no clock, no threads
    titan.store
            |
    titan.io                               wraps the OS; below roles/sdk/cli
            |
    titan.roles.<role>                     composes pure + io; roles share
            |                              only titan.roles.common
    titan.cli

    titan (top-level __init__) and titan.sdk: the light client library,
    importing only titan.wire, titan.core, titan.errors and titan.sdk.

Rules, as named in failure messages:

(a) pure modules import none of OS_MODULES and no titan module outside
    titan.wire, titan.core, titan.errors, titan.store;
(b) titan.io imports no titan.roles, titan.sdk or titan.cli (nor the bare
    ``titan`` package, which is the SDK's facade);
(c) a role imports no other role (``titan.roles.common`` excepted) and
    never titan.cli; a role may be a package and import its own submodules;
(d) titan.sdk and titan/__init__.py import only titan.wire, titan.core,
    titan.errors, titan.sdk (and ``titan`` itself);
(e) nothing imports outside the standard library.

Every import statement counts, including ones nested in functions or under
``if TYPE_CHECKING:``. Modules are discovered on each run, so new files are
checked without touching this test.
"""
from __future__ import annotations

import ast
import os
import pkgutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Iterator, List, Optional, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO_ROOT / "titan"

PURE_PACKAGES = ("titan.wire", "titan.core", "titan.errors", "titan.store")
SDK_ALLOWED = ("titan.wire", "titan.core", "titan.errors", "titan.sdk")
OS_MODULES = frozenset(
    {
        "socket",
        "selectors",
        "subprocess",
        "threading",
        "time",
        "multiprocessing",
        "asyncio",
        "ssl",
    }
)


# -- discovery ---------------------------------------------------------------


def module_files(package_dir: Path = PACKAGE_DIR) -> List[Path]:
    """Every .py file of the package, sorted, skipping caches and dotfiles."""
    found = []
    for path in package_dir.rglob("*.py"):
        rel = path.relative_to(package_dir.parent)
        if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue
        found.append(path)
    return sorted(found)


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    """``titan/core/model.py`` -> ``titan.core.model``; packages drop __init__."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stdlib_fallback() -> FrozenSet[str]:
    """Top-level stdlib names for Pythons without sys.stdlib_module_names (3.9).

    Lists what the interpreter's own stdlib directories hold (site-packages
    is not a package, so pkgutil skips it) plus the built-in modules.
    """
    paths = sysconfig.get_paths()
    dirs = {paths["stdlib"], paths["platstdlib"]}
    dirs |= {os.path.join(d, "lib-dynload") for d in list(dirs)}
    names = {info.name for info in pkgutil.iter_modules(sorted(d for d in dirs if os.path.isdir(d)))}
    names.update(sys.builtin_module_names)
    names.add("__future__")
    return frozenset(names)


STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) or stdlib_fallback()


# -- reading imports ----------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One imported name: fully qualified ``target``, where and how it was written."""

    target: str
    line: int
    statement: str


@dataclass(frozen=True)
class Violation:
    """One import that breaks one layering rule."""

    path: str
    module: str
    imported: Import
    rule: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.imported.line}: module {self.module} imports "
            f"{self.imported.target!r} (`{self.imported.statement}`), "
            f"breaking rule {self.rule}"
        )


def _resolve_relative(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    """Absolute name for ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        return "." * level + (name or "")  # climbs above titan: (e) will flag it
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _from_statement(node: ast.ImportFrom, alias: ast.alias) -> str:
    return f"from {'.' * node.level}{node.module or ''} import {alias.name}"


def read_imports(
    module: str, source: str, *, is_package: bool, known: FrozenSet[str]
) -> Iterator[Import]:
    """Yield every import in ``source``, nested ones included.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a
    module in ``known``, else as importing ``pkg``.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, is_package, node.level, node.module)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if candidate in known else base
                yield Import(target, node.lineno, _from_statement(node, alias))


# -- rules ------------------------------------------------------------------


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_titan(name: str) -> bool:
    return _within(name, "titan")


def _role_of(name: str) -> Optional[str]:
    """``titan.roles.master.loop`` -> ``master``; the roles package itself -> None."""
    parts = name.split(".")
    return parts[2] if len(parts) > 2 else None


def rule_pure(module: str, target: str) -> Optional[str]:
    if not _within(module, *PURE_PACKAGES):
        return None
    if target.split(".")[0] in OS_MODULES:
        return (
            "(a): pure modules (titan.wire, titan.core, titan.errors, titan.store) do no I/O; "
            f"they may not import any of {', '.join(sorted(OS_MODULES))}"
        )
    if _is_titan(target) and not _within(target, *PURE_PACKAGES):
        return "(a): pure modules may import only titan.wire, titan.core, titan.errors and titan.store"
    return None


def rule_io(module: str, target: str) -> Optional[str]:
    if not _within(module, "titan.io"):
        return None
    if target == "titan" or _within(target, "titan.roles", "titan.sdk", "titan.cli"):
        return (
            "(b): titan.io sits below the roles, the SDK and the CLI and may not "
            "import titan.roles, titan.sdk, titan.cli or the titan package (the SDK facade)"
        )
    return None


def rule_roles(module: str, target: str) -> Optional[str]:
    if not _within(module, "titan.roles"):
        return None
    if _within(target, "titan.cli"):
        return "(c): roles never import titan.cli"
    if not _within(target, "titan.roles") or target == module:
        return None
    theirs = _role_of(target)
    if theirs == "common" or (theirs is not None and theirs == _role_of(module)):
        return None
    return (
        "(c): roles never import each other; the only shared roles module is "
        "titan.roles.common"
    )


def rule_sdk(module: str, target: str) -> Optional[str]:
    if not (module == "titan" or _within(module, "titan.sdk")):
        return None
    if _is_titan(target) and target != "titan" and not _within(target, *SDK_ALLOWED):
        return (
            "(d): titan and titan.sdk stay light for user code and may import only "
            "titan.wire, titan.core, titan.errors and titan.sdk"
        )
    return None


def rule_stdlib(module: str, target: str) -> Optional[str]:
    top = target.split(".")[0]
    if top == "titan" or top in STDLIB:
        return None
    return f"(e): the runtime is standard library only, and {top!r} is not in it"


RULES = (rule_pure, rule_io, rule_roles, rule_sdk, rule_stdlib)


def check_source(
    path: str, module: str, source: str, *, is_package: bool, known: FrozenSet[str]
) -> List[Violation]:
    """Every rule each import of ``module`` breaks."""
    violations = []
    for imported in read_imports(module, source, is_package=is_package, known=known):
        for rule in RULES:
            reason = rule(module, imported.target)
            if reason is not None:
                violations.append(Violation(path, module, imported, reason))
    return violations


def check_file(path: Path, known: FrozenSet[str]) -> List[Violation]:
    return check_source(
        path.relative_to(REPO_ROOT).as_posix(),
        module_name(path),
        path.read_text(encoding="utf-8"),
        is_package=path.name == "__init__.py",
        known=known,
    )


# -- tests --------------------------------------------------------------------

MODULE_FILES = module_files()
KNOWN_MODULES = frozenset(module_name(p) for p in MODULE_FILES)


def test_discovery_sees_the_package() -> None:
    # A checker that finds no files passes vacuously; make sure it looks.
    expected = {
        "titan",
        "titan.cli",
        "titan.errors",
        "titan.wire",
        "titan.core",
        "titan.io",
        "titan.roles",
        "titan.sdk",
    }
    assert expected <= KNOWN_MODULES


@pytest.mark.parametrize(
    "path", MODULE_FILES, ids=[p.relative_to(REPO_ROOT).as_posix() for p in MODULE_FILES]
)
def test_module_respects_layers(path: Path) -> None:
    violations = check_file(path, KNOWN_MODULES)
    assert not violations, "layering broken:\n" + "\n".join(str(v) for v in violations)


SYNTHETIC_KNOWN = frozenset(
    {
        "titan",
        "titan.cli",
        "titan.errors",
        "titan.core",
        "titan.core.model",
        "titan.io",
        "titan.io.loop",
        "titan.roles",
        "titan.roles.common",
        "titan.roles.master",
        "titan.roles.worker",
        "titan.sdk",
        "titan.wire",
        "titan.wire.codec",
    }
)

BAD_MODULES: List[Tuple[str, bool, str, str, str]] = [
    # (module, is_package, source, rule, offending target)
    ("titan.core.sched", False, "import socket\n", "(a)", "socket"),
    ("titan.errors", False, "import time\n", "(a)", "time"),
    ("titan.wire.codec", False, "import multiprocessing.pool\n", "(a)", "multiprocessing.pool"),
    ("titan.wire.codec", False, "from titan.io import loop\n", "(a)", "titan.io.loop"),
    ("titan.core.sched", False, "from ..io.loop import Loop\n", "(a)", "titan.io.loop"),
    ("titan.core.sched", False, "import titan\n", "(a)", "titan"),
    ("titan.store.engine", False, "import time\n", "(a)", "time"),
    ("titan.store.engine", False, "from titan.io import loop\n", "(a)", "titan.io.loop"),
    ("titan.io.loop", False, "from titan.roles import master\n", "(b)", "titan.roles.master"),
    ("titan.io.loop", False, "import titan.sdk\n", "(b)", "titan.sdk"),
    ("titan.roles.master", False, "from titan.roles.worker import W\n", "(c)", "titan.roles.worker"),
    ("titan.roles.master", False, "from . import worker\n", "(c)", "titan.roles.worker"),
    ("titan.roles.master", False, "import titan.roles\n", "(c)", "titan.roles"),
    ("titan.roles.worker", False, "from titan.cli import main\n", "(c)", "titan.cli"),
    ("titan.roles.worker", False, "from titan.cli.common import fail\n", "(c)", "titan.cli.common"),
    ("titan.sdk.client", False, "from titan.io import loop\n", "(d)", "titan.io.loop"),
    ("titan", True, "from titan.roles.master import M\n", "(d)", "titan.roles.master"),
    ("titan.cli", False, "import requests\n", "(e)", "requests"),
    ("titan.core.model", False, "def f():\n    import yaml\n", "(e)", "yaml"),
]


@pytest.mark.parametrize(
    "module, is_package, source, rule, target",
    BAD_MODULES,
    ids=[f"{rule}-{module}-{target}" for module, _, _, rule, target in BAD_MODULES],
)
def test_checker_rejects_bad_module(
    module: str, is_package: bool, source: str, rule: str, target: str
) -> None:
    path = "<synthetic " + module.replace(".", "/") + ".py>"
    violations = check_source(path, module, source, is_package=is_package, known=SYNTHETIC_KNOWN)
    messages = [str(v) for v in violations]
    assert any(f"rule {rule}" in m and repr(target) in m for m in messages), messages
    line = source.rstrip("\n").count("\n") + 1
    message = next(m for m in messages if f"rule {rule}" in m)
    assert message.startswith(f"{path}:{line}: module {module} imports ")


GOOD_MODULES: List[Tuple[str, bool, str]] = [
    (
        "titan.core.sched",
        False,
        "from __future__ import annotations\nimport heapq\n"
        "from titan.errors import UsageError\nfrom . import model\nfrom titan.wire import codec\n",
    ),
    ("titan.io.loop", False, "import selectors\nimport socket\nfrom titan.core import model\n"),
    ("titan.store.engine", False, "from titan.store import keyspace\nfrom titan.errors import TitanError\n"),
    (
        "titan.roles.master",
        False,
        "import threading\nfrom titan.roles import common\nfrom .common import x\n"
        "from titan.io import loop\nfrom titan import sdk\n",
    ),
    ("titan.roles.master.loop", False, "from . import state\nfrom titan.roles.master import s\n"),
    ("titan.sdk.client", False, "import socket\nimport titan\nfrom titan.wire import codec\n"),
    ("titan", True, "from titan.sdk import connect\nfrom .errors import TitanError\n"),
]


@pytest.mark.parametrize("module, is_package, source", GOOD_MODULES, ids=[g[0] for g in GOOD_MODULES])
def test_checker_accepts_good_module(module: str, is_package: bool, source: str) -> None:
    violations = check_source("<synthetic>", module, source, is_package=is_package, known=SYNTHETIC_KNOWN)
    assert violations == []


def test_stdlib_fallback_is_good_enough() -> None:
    names = stdlib_fallback()
    assert {"socket", "json", "zipfile", "selectors", "__future__", "sys", "_thread"} <= names
    assert "pytest" not in names

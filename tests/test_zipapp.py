"""The zipapp and the checkout launchers: reproducible, self-contained, runnable.

Builds ``titan.pyz`` with ``zipapp_build.build`` and runs it the way a user
would: copied alone into an empty directory, no PYTHONPATH. Also runs
``python3 titan.py`` and ``python3 -m titan`` from the checkout, and, when a
Python 3.9 interpreter is installed, builds and runs the archive with it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Sequence

import pytest

import titan

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON39 = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")
TIMEOUT_S = 120
EXPECTED_VERSION = f"titan {titan.__version__}"

needs_python39 = pytest.mark.skipif(
    not PYTHON39.exists(), reason=f"no Python 3.9 interpreter at {PYTHON39}"
)


def _load_builder() -> ModuleType:
    """Import zipapp_build.py from the repo root, which is not on sys.path."""
    spec = importlib.util.spec_from_file_location("zipapp_build", REPO_ROOT / "zipapp_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zipapp_build = _load_builder()


def _clean_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(argv: Sequence[str], *, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=str(cwd),
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=TIMEOUT_S,
    )


def _assert_prints_version(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == EXPECTED_VERSION, (result.stdout, result.stderr)


def _copy_sources(dest: Path, *, mtime_s: float, reverse: bool) -> Path:
    """Copy titan/**/*.py under ``dest`` in a chosen order with a chosen mtime."""
    sources = sorted((REPO_ROOT / "titan").rglob("*.py"), reverse=reverse)
    for src in sources:
        if "__pycache__" in src.parts:
            continue
        target = dest / src.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(src), str(target))
        os.utime(str(target), (mtime_s, mtime_s))
    return dest


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zipapp_build.build(tmp_path_factory.mktemp("build") / "titan.pyz")


# -- the archive ------------------------------------------------------------------


def test_build_twice_gives_identical_bytes(tmp_path: Path) -> None:
    first = zipapp_build.build(tmp_path / "a" / "titan.pyz")
    second = zipapp_build.build(tmp_path / "b" / "titan.pyz")
    assert first.read_bytes() == second.read_bytes()


def test_build_ignores_mtimes_and_listing_order(tmp_path: Path, pyz: Path) -> None:
    # Given the same sources copied with other mtimes, in the reverse order
    copy = _copy_sources(tmp_path / "src", mtime_s=time.time() + 86400, reverse=True)
    # When the copy is built
    rebuilt = zipapp_build.build(tmp_path / "titan.pyz", source_root=copy)
    # Then the bytes match the build from the checkout
    assert rebuilt.read_bytes() == pyz.read_bytes()


def test_archive_holds_sorted_py_sources_and_root_main(pyz: Path) -> None:
    expected = ["__main__.py"] + sorted(
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "titan").rglob("*.py")
        if "__pycache__" not in p.parts and not any(s.startswith(".") for s in p.parts)
    )
    with zipfile.ZipFile(str(pyz)) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == expected
        assert b"titan.cli" in archive.read("__main__.py")
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
        assert info.external_attr >> 16 == 0o100644, info.filename
        assert info.compress_type == zipfile.ZIP_DEFLATED, info.filename


def test_archive_leaves_out_caches_and_non_python_files(tmp_path: Path) -> None:
    # Given a source tree with a __pycache__ entry and a data file
    src = _copy_sources(tmp_path / "src", mtime_s=time.time(), reverse=False)
    (src / "titan" / "__pycache__").mkdir(exist_ok=True)
    (src / "titan" / "__pycache__" / "cli.cpython-311.py").write_text("x = 1\n")
    (src / "titan" / "notes.txt").write_text("not code\n")
    # When it is built
    built = zipapp_build.build(tmp_path / "titan.pyz", source_root=src)
    # Then neither is in the archive
    with zipfile.ZipFile(str(built)) as archive:
        names = archive.namelist()
    assert not [n for n in names if "__pycache__" in n or not n.endswith(".py")]


def test_archive_is_an_executable_script(pyz: Path) -> None:
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert pyz.stat().st_mode & stat.S_IXUSR


def test_command_line_prints_path_and_size(tmp_path: Path) -> None:
    output = tmp_path / "out" / "titan.pyz"
    result = _run([sys.executable, REPO_ROOT / "zipapp_build.py", "--output", output], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{output} {output.stat().st_size} bytes"


# -- running it -------------------------------------------------------------------


def _alone_in_empty_dir(pyz: Path, tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return Path(shutil.copy(str(pyz), str(empty / "titan.pyz")))


def test_pyz_runs_alone_in_an_empty_directory(pyz: Path, tmp_path: Path) -> None:
    copy = _alone_in_empty_dir(pyz, tmp_path)
    _assert_prints_version(_run([sys.executable, "titan.pyz", "--version"], cwd=copy.parent))


def test_pyz_needs_no_site_packages(pyz: Path, tmp_path: Path) -> None:
    # -I -S: no environment, no user or site packages, so no installed titan
    copy = _alone_in_empty_dir(pyz, tmp_path)
    result = _run([sys.executable, "-I", "-S", "titan.pyz", "--version"], cwd=copy.parent)
    _assert_prints_version(result)


@pytest.mark.parametrize(
    "argv", [["titan.py", "--version"], ["-m", "titan", "--version"]], ids=["titan.py", "-m titan"]
)
def test_checkout_launchers_print_version(argv: List[str]) -> None:
    _assert_prints_version(_run([sys.executable] + argv, cwd=REPO_ROOT))


# -- Python 3.9 -------------------------------------------------------------------

COMPILE_EVERY_MODULE = """
import sys, zipfile
failed = 0
with zipfile.ZipFile(sys.argv[1]) as archive:
    for name in archive.namelist():
        try:
            compile(archive.read(name), name, "exec", dont_inherit=True)
        except SyntaxError as exc:
            failed += 1
            print("%s:%s: %s" % (name, exc.lineno, exc.msg), file=sys.stderr)
sys.exit(1 if failed else 0)
"""


@needs_python39
def test_pyz_runs_on_python39(pyz: Path, tmp_path: Path) -> None:
    copy = _alone_in_empty_dir(pyz, tmp_path)
    _assert_prints_version(_run([PYTHON39, "titan.pyz", "--version"], cwd=copy.parent))


@needs_python39
def test_python39_builds_a_runnable_pyz(tmp_path: Path) -> None:
    output = tmp_path / "titan.pyz"
    result = _run([PYTHON39, REPO_ROOT / "zipapp_build.py", "--output", output], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_prints_version(_run([PYTHON39, output, "--version"], cwd=tmp_path))


@needs_python39
def test_every_module_compiles_on_python39(pyz: Path, tmp_path: Path) -> None:
    # Catches 3.10+ syntax (match, parenthesised context managers ...) in any
    # module, not only the ones --version happens to import.
    result = _run([PYTHON39, "-I", "-c", COMPILE_EVERY_MODULE, pyz], cwd=tmp_path)
    assert result.returncode == 0, result.stderr

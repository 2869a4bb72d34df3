"""``titan store check DIR [--fix]``: validate an AOF directory, and cut a torn tail.

What this module owns: the offline check.  It reads the manifest, scans
every file it lists (optionally replaying into a fresh engine, so unknown
commands and wrong arities show up as they would at start-up) and reports
per file: status, whole commands, size and the first problem with its byte
offset.  ``--fix`` holds the directory's lock and truncates a bad tail of
the LAST incremental file only; a problem anywhere else is reported, never
cut, because what follows it would be lost.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

from titan.io.aoffiles import AOF_DIR, MANIFEST_NAME, AofError, AofInfo, DirLock, read_manifest, replayer, scan_file

__all__ = ["FileReport", "CheckReport", "check"]


@dataclass
class FileReport:
    """One file's state as :func:`check` found it."""

    name: str
    kind: str
    status: str                 # ok | torn | corrupt | missing | fixed
    commands: int = 0
    size: int = 0
    offset: int = 0             # where the problem starts
    problem: str = ""

    def line(self) -> str:
        kind = {"b": "base", "i": "incr", "h": "history"}.get(self.kind, self.kind)
        text = f"{self.name} ({kind}): {self.status}, {self.commands} commands, {self.size} bytes"
        return text + (f"; {self.problem} at byte offset {self.offset}" if self.problem else "")


@dataclass
class CheckReport:
    """What ``titan store check`` prints: one line per file, then problems and repairs."""

    directory: Path
    files: List[FileReport] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    fixed: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(data_dir: Path, fix: bool = False, *, engine: Any = None, now_ms: int = 0) -> CheckReport:
    """Validate every file the manifest lists; with ``fix``, cut a bad tail of the last incr file.

    When ``engine`` is given, each command is also replayed into it (an
    unknown command or a wrong arity is reported like bad bytes, never cut).
    A problem in any other place is reported and left alone.
    """
    data_dir = Path(data_dir)
    report = CheckReport(data_dir)
    aof_dir = data_dir / AOF_DIR
    manifest_path = aof_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        report.problems.append(f"{manifest_path}: no manifest (is {data_dir} a titan store --dir?)")
        return report
    try:
        manifest = read_manifest(manifest_path)
    except AofError as exc:
        report.problems.append(str(exc))
        return report
    lock = DirLock(data_dir)
    if fix:                       # never cut a file a running store is appending to
        lock.acquire()
    try:
        files = manifest.files
        for index, info in enumerate(files):
            last = index == len(files) - 1 and info.kind == "i"
            report.files.append(_check_file(aof_dir / info.name, info, last, fix, engine, now_ms, report))
    finally:
        lock.release()
    return report


def _check_file(path: Path, info: AofInfo, last: bool, fix: bool, engine: Any, now_ms: int,
                report: CheckReport) -> FileReport:
    entry = FileReport(info.name, info.kind, "ok")
    if not path.is_file():
        entry.status, entry.problem = "missing", "listed in the manifest but missing"
        report.problems.append(f"{path}: listed in the manifest but missing")
        return entry
    result = scan_file(path, replayer(engine, now_ms) if engine is not None else None)
    entry.commands, entry.size = result.commands, result.size
    if not result.problem:
        return entry
    entry.status = "torn" if result.torn else "corrupt"
    entry.offset, entry.problem = result.problem_offset, result.problem
    where = (f"{path}: {result.problem} at byte offset {result.problem_offset} "
             f"(after {result.commands} whole commands)")
    if fix and last:
        cut = result.size - result.good_bytes
        os.truncate(str(path), result.good_bytes)
        entry.status, entry.size = "fixed", result.good_bytes
        report.fixed.append(f"{path}: cut {cut} bytes from byte offset {result.good_bytes} "
                            f"({result.problem}); kept {result.commands} whole commands")
    elif last:
        report.problems.append(where + f"; `titan store check {path.parent.parent} --fix` cuts it off")
    else:
        report.problems.append(where + "; not the last file, so --fix leaves it alone: restore it from "
                               "a backup, or truncate it by hand if you accept losing what follows")
    return entry

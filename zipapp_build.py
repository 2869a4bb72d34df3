#!/usr/bin/env python3
"""Builds ``dist/titan.pyz``: the whole runtime as one executable file.

Owns the archive format and its reproducibility. The archive holds
``titan/**/*.py`` (nothing else: no ``__pycache__``, no data files) plus a
root ``__main__.py`` that runs :func:`titan.cli.main`, behind a
``#!/usr/bin/env python3`` line.

The same sources give the same bytes: entries are sorted by name and each
gets a fixed timestamp, fixed permissions, a fixed creator system and the
same deflate level, so nothing about the build machine, the clock or the
file system's listing order leaks in. (Byte equality across machines also
needs the same zlib; the sources, not the archive, are what we trust.)

Usage::

    python3 zipapp_build.py [--output PATH]    # default: dist/titan.pyz

Runs on Python 3.9+ with the standard library only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, List, Optional, Sequence, Tuple

__all__ = ["build", "archive_entries", "main", "DEFAULT_OUTPUT", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUTPUT = REPO_ROOT / "dist" / "titan.pyz"

SHEBANG = b"#!/usr/bin/env python3\n"
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # earliest date a zip header can hold
FILE_MODE = 0o100644  # regular file, rw-r--r--
CREATE_SYSTEM_UNIX = 3  # so external_attr means Unix mode bits on every OS
COMPRESS_LEVEL = 9
EXECUTABLE_MODE = 0o755

ROOT_MAIN = b'''"""Zipapp entry point: ``python3 titan.pyz ...`` runs the Titan CLI."""
import sys

from titan.cli import main

sys.exit(main())
'''

EXIT_OK = 0
EXIT_USAGE = 2


def _is_packaged(rel: Path) -> bool:
    """True for a source file that belongs in the archive."""
    if rel.suffix != ".py":
        return False
    return not any(part == "__pycache__" or part.startswith(".") for part in rel.parts)


def archive_entries(source_root: Path = REPO_ROOT) -> List[Tuple[str, bytes]]:
    """Return ``(arcname, data)`` pairs for the archive, sorted by arcname."""
    package_dir = source_root / "titan"
    if not (package_dir / "__init__.py").is_file():
        raise FileNotFoundError(f"no titan package at {package_dir}")
    entries = [("__main__.py", ROOT_MAIN)]
    for path in package_dir.rglob("*.py"):
        rel = path.relative_to(source_root)
        if path.is_file() and _is_packaged(rel):
            entries.append((rel.as_posix(), path.read_bytes()))
    entries.sort(key=lambda entry: entry[0])
    return entries


def _zip_info(arcname: str) -> zipfile.ZipInfo:
    """A ZipInfo whose every header field is fixed, whatever the machine."""
    info = zipfile.ZipInfo(arcname, date_time=FIXED_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = CREATE_SYSTEM_UNIX
    info.external_attr = FILE_MODE << 16
    return info


def _write_archive(fileobj: BinaryIO, entries: Sequence[Tuple[str, bytes]]) -> None:
    """Write the shebang then a zip of ``entries`` into an open binary file."""
    fileobj.write(SHEBANG)
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in entries:
            archive.writestr(
                _zip_info(arcname),
                data,
                compress_type=zipfile.ZIP_DEFLATED,
                compresslevel=COMPRESS_LEVEL,
            )


def build(output: Path = DEFAULT_OUTPUT, *, source_root: Path = REPO_ROOT) -> Path:
    """Build the zipapp at ``output`` from ``source_root/titan``; return its path.

    Writes to a temporary file beside ``output`` and renames it into place,
    so a reader never sees half an archive. The result is executable.
    """
    output = Path(output)
    entries = archive_entries(Path(source_root))
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".titan-", suffix=".pyz.tmp", dir=str(output.parent))
    try:
        with os.fdopen(fd, "wb") as fileobj:
            _write_archive(fileobj, entries)
        os.chmod(tmp_name, EXECUTABLE_MODE)
        os.replace(tmp_name, str(output))
    except BaseException:
        _remove_quietly(tmp_name)
        raise
    return output


def _remove_quietly(path: str) -> None:
    """Delete a leftover temporary file, if it is still there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="zipapp_build.py",
        description="Build the Titan zipapp from titan/**/*.py.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="where to write the archive (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build the archive and print ``PATH SIZE bytes``; return an exit code."""
    args = _parse_args(argv)
    try:
        output = build(args.output)
    except OSError as exc:
        print(f"zipapp_build.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{output} {output.stat().st_size} bytes")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

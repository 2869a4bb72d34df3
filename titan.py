#!/usr/bin/env python3
"""Checkout launcher: ``python3 titan.py ...`` runs the CLI without installing.

Puts this file's real directory (symlinks resolved) first on ``sys.path``
so the ``titan/`` package next to it wins over any installed copy, then
hands argv to :func:`titan.cli.main` and exits with its return code.

Inside ``import titan`` below, the package directory ``titan/`` is found
before this ``titan.py`` file, because the import system prefers a package
to a module of the same name in the same directory.
"""
from __future__ import annotations

import os
import sys


def _run() -> int:
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [here] + [p for p in sys.path if os.path.realpath(p or ".") != here]
    from titan.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_run())

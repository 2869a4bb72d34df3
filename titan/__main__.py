"""``python -m titan`` and the zipapp's entry point."""
from __future__ import annotations

import sys

from titan.cli import main

if __name__ == "__main__":
    sys.exit(main())

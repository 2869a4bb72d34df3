"""``python -m titan.cli``, which ran the CLI when it was one module; ``python -m titan`` does the same."""
from __future__ import annotations

import sys

from titan.cli import main

if __name__ == "__main__":
    sys.exit(main())

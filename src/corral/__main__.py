"""``python -m corral``: the ``corral`` command (see :mod:`corral.cli.app`)."""

from __future__ import annotations

import sys

from .cli.app import main

if __name__ == "__main__":
    sys.exit(main())

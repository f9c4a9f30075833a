"""``python -m corral.worker BATCH_DIR SUB INDEX ELEMENT``: what a job script runs on a node."""

from __future__ import annotations

import sys

from .run import main

sys.exit(main())

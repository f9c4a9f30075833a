"""Count scheduler commands by putting logging shims first on PATH.

Each shim appends its name and the time (seconds since the epoch) to a log file and execs the
real program, so corral (which looks commands up on PATH at each call) is measured without any
change to its code.
"""

from __future__ import annotations

import collections
import os
import shutil
import stat
from pathlib import Path

COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo", "sacctmgr")


class CommandLog:
    """A folder of shims and the log they write."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "commands.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        for name in COMMANDS:
            real = shutil.which(name)
            if real is None:
                continue
            shim = folder / name
            shim.write_text(f'#!/bin/sh\necho {name} $(date +%s.%N) >> "{self.log}"\nexec "{real}" "$@"\n')
            shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    @property
    def path(self) -> str:
        """A PATH value with the shims first."""
        return f"{self.folder}{os.pathsep}{os.environ.get('PATH', '')}"

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(name for name, _ in self.calls())

    def calls(self) -> list[tuple[str, float]]:
        """Every command run, with when it started (seconds since the epoch), in order."""
        found = []
        for line in self.log.read_text().splitlines():
            name, _, when = line.partition(" ")
            found.append((name, float(when or 0)))
        return found

    def reset(self) -> None:
        self.log.write_text("")

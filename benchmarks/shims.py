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
        self.argv_log = folder / "argv.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        self.argv_log.write_text("")
        for name in COMMANDS:
            real = shutil.which(name)
            if real is None:
                continue
            shim = folder / name
            shim.write_text(
                f'#!/bin/sh\necho {name} $(date +%s.%N) >> "{self.log}"\n'
                # the whole command line, its words split by \037, in one write
                f'printf \'%s\\n\' "{name}${{1+$(printf \'\\037%s\' "$@")}}" >> "{self.argv_log}"\n'
                f'exec "{real}" "$@"\n'
            )
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

    def argvs(self) -> list[list[str]]:
        """Every command run, as its argv, in order."""
        return [line.split("\037") for line in self.argv_log.read_text().splitlines()]

    def reset(self) -> None:
        self.log.write_text("")
        self.argv_log.write_text("")

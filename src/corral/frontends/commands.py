"""Shell commands as jobs (``corral.sbatch``, ``corral.srun``): what runs on the node.

The command is written into the job script as the user gave it, in a quoted here-document
that the job's bash hands to the worker unexpanded; nothing on the submitting side ever
passes it through a shell. On the node, :func:`run_command` runs it with ``bash -c`` in the
job's working directory, so ``$HOSTNAME`` and the like are the node's. Its output goes to
the call's log files as it is written, and comes back in a :class:`ShellResult`; a non-zero
exit raises :class:`ShellCommandError`, so that the job ends FAILED and jobs waiting for it
with ``condition="ok"`` do not run. Imported by the worker on every node: keep it light.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import IO

from ..errors import CorralError


@dataclass(frozen=True)
class ShellResult:
    """How a shell command ended: its exit code and everything it printed."""

    command: str
    returncode: int
    stdout: str
    stderr: str


class ShellCommandError(CorralError):
    """A shell command exited non-zero; ``result`` holds its exit code and output."""

    def __init__(self, result: ShellResult) -> None:
        self.result = result
        self.returncode = result.returncode
        tail = "\n".join("    " + line for line in result.stderr.rstrip().splitlines()[-10:])
        super().__init__(
            f"the command {result.command!r} exited with code {result.returncode}"
            + (f"\n  stderr (last lines):\n{tail}" if tail else "")
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (ShellCommandError, (self.result,))


def run_command(command: str) -> ShellResult:
    """Run ``command`` with bash; return its result, or raise ShellCommandError on a
    non-zero exit. Its output is copied to this process's stdout and stderr as it comes."""
    proc = subprocess.Popen(
        ["/bin/bash", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    err: list[bytes] = []
    copiers = [
        threading.Thread(target=_copy, args=(proc.stdout, sys.stdout, out), daemon=True),
        threading.Thread(target=_copy, args=(proc.stderr, sys.stderr, err), daemon=True),
    ]
    for thread in copiers:
        thread.start()
    returncode = proc.wait()
    for thread in copiers:
        thread.join()
    result = ShellResult(
        command,
        returncode,
        b"".join(out).decode(errors="replace"),
        b"".join(err).decode(errors="replace"),
    )
    if returncode != 0:
        raise ShellCommandError(result)
    return result


def _copy(source: IO[bytes], sink: IO[str], kept: list[bytes]) -> None:
    """Keep what the command prints, and pass it on to the call's own log at once."""
    binary = getattr(sink, "buffer", None)
    for chunk in iter(lambda: source.read1(65536), b""):  # type: ignore[attr-defined]
        kept.append(chunk)
        if binary is not None:
            sink.flush()
            binary.write(chunk)
            binary.flush()
        else:
            sink.write(chunk.decode(errors="replace"))
            sink.flush()

"""Whether the process of an element that took calls is certainly gone.

An array element names itself (element, host, pid) in its claims and in the Start record of
its stream (see :mod:`corral.worker.run`). Without asking a scheduler, a reader can still
tell that a call will never finish when its element ran on *this* machine and the process
is gone: the script that ran it was interrupted (Ctrl-C
killed its local processes) or the process was killed. Other hosts' processes cannot be
seen from here, so for them nothing is claimed.

A pid alone is not enough: pids are reused (``pid_max`` is 32768 on many systems), and a
process that has exited but was not reaped (a zombie) still has one. On Linux the claimant's
process is therefore the one with that pid that started before the claim was made and is not
a zombie; elsewhere, any process with that pid.
"""

from __future__ import annotations

import math
import os

from .protocol import Claim

#: How much earlier than its real start a process's start time read from /proc can appear
#: (the boot time there is whole seconds) plus room for the claim file's timestamp.
_START_SLACK = 2.0


def process_gone(claimant: Claim, claimed_at: float) -> bool:
    """True when the element of ``claimant`` ran on this machine and its process no longer runs: no process
    has its pid, or the one that has it is a zombie or started after ``claimed_at`` (seconds
    since the epoch, the claim file's time), so it is another process that got the pid.
    False whenever that cannot be known (another host, /proc unreadable)."""
    if claimant.host != os.uname().nodename:
        return False
    started = _linux_start(claimant.pid)
    if started is None:  # not Linux, or /proc could not say
        return not _pid_exists(claimant.pid)
    return started > claimed_at + _START_SLACK


def _linux_start(pid: int) -> float | None:
    """When the process with ``pid`` started (seconds since the epoch); infinity when no
    live process has that pid (it "starts" after any claim), None when /proc cannot tell."""
    if not os.path.isdir("/proc/self"):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return math.inf
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields count after it.
    fields = stat[stat.rfind(b")") + 1 :].split()
    try:
        state, start_ticks = fields[0], int(fields[19])
        boot = _boot_time()
    except (IndexError, ValueError, OSError):
        return None
    if state in (b"Z", b"X"):  # exited; only its parent has not collected it yet
        return math.inf
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat", "rb") as file:
        for line in file:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError("/proc/stat has no btime")


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # it exists and belongs to someone else (or cannot be asked: assume so)
    return True

"""Who took a call, from its claim file, and whether that process is certainly gone.

An array element claims a call by creating ``claims/<i>.<a>`` holding a
:class:`~corral.store.protocol.Claim` (see :mod:`corral.worker.run`). Without asking a
scheduler, a reader can still tell that a call will never finish when its element ran on
*this* machine and the process is gone: the script that ran it was interrupted (Ctrl-C
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

from ..errors import FormatError
from .batch import BatchStore
from .protocol import Claim, is_element_id

#: How much earlier than its real start a process's start time read from /proc can appear
#: (the boot time there is whole seconds) plus room for the claim file's timestamp.
_START_SLACK = 2.0


def claim_of(store: BatchStore, call: int, attempt: int) -> Claim | None:
    """The attempt's claim (:meth:`BatchStore.read_claim`); None when it has none, or one
    that cannot be read or is not one corral writes: a reader for people shows the call as
    not taken rather than fail."""
    try:
        return store.read_claim(call, attempt)
    except (OSError, FormatError):
        return None


def claimant_gone(store: BatchStore, call: int, attempt: int, claim: Claim | None) -> bool:
    """:func:`process_gone` for the element that claimed an attempt of a call in ``store`` (local)."""
    if claim is None or claim.by_client:
        return False
    try:
        claimed_at = os.stat(store.claim_path(call, attempt)).st_mtime
    except OSError:
        return False
    return process_gone(claim, claimed_at)


def element_of(store: BatchStore, call: int, attempt: int) -> str:
    """The array element that took the attempt, from its claim, else from the attempt's
    record (a job that died before the claim was read); "" when neither names one."""
    claim = claim_of(store, call, attempt)
    if claim is not None and not claim.by_client:
        return claim.element
    if (call, attempt) not in store.recorded():
        return ""
    try:
        job = store.read_attempt(call, attempt).get("job_id")
    except (OSError, ValueError, AttributeError):
        return ""
    # Only an id corral makes: a planted record must not name a log outside logs/.
    return job if isinstance(job, str) and is_element_id(job) else ""


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

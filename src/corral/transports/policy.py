"""When an agent session (:mod:`.pipe`) breaks: which requests may be sent again, and how long
to wait between attempts to start a new session. Pure: a table and a schedule.

A request whose session broke while it was in flight may or may not have been carried out
(the agent may even still be carrying it out). It is sent again on a new session only when
doing it twice leaves the same result as doing it once (:data:`RESEND`); any other raises
:class:`~corral.transports.pipe.AgentLost` with ``in_flight`` set, and its caller decides. A
request that never left (the new session did not start) is always safe to send once one does.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

#: Whether each operation may be sent again after its session broke with it in flight.
RESEND: Mapping[str, bool] = {
    "hello": True,  # reads
    "expand_path": True,
    "read_bytes": True,
    "read_private": True,
    "read_range": True,
    "listdir": True,
    "scan": True,  # reads from the caller's cursors, which a lost answer did not move
    "scan_many": True,
    "makedirs": True,  # creates what is missing and checks the rest: the same the second time
    "makedirs_many": True,
    "write_bytes": True,  # a whole new file renamed into place: the same content twice
    "write_many": True,
    "sweep_temporaries": True,  # housekeeping: a second sweep removes what the first left
    "remove_tree": True,  # a folder removed twice is removed: a missing one is no error
    # The second try of these says "taken" for what the first one made: the caller would read
    # its own claim (or batch folder) as someone else's. It must find out itself (a claim
    # names who took it), so the break is raised.
    "create_exclusive": False,
    "mkdir_exclusive": False,
    "run": False,  # sbatch twice is two jobs: the backend checks what happened (Backend.run)
}

#: How often one request is sent again after its session broke with it in flight, each time
#: on a new session; past that the break is raised (a request that kills its agent, say).
MAX_RESENDS = 3


def resends(op: str) -> bool:
    """True when ``op`` may be sent again after a break in flight (unknown ones may not)."""
    return RESEND.get(op, False)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """The pauses between attempts to start a new session: ``first``, times ``factor`` after
    each failed attempt, at most ``cap`` seconds; each shortened at random by up to
    ``jitter`` (a fraction), so that the clients of one login node that went away do not
    all come back at the same instant."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (0 < self.first <= self.cap and self.factor >= 1 and 0 <= self.jitter < 1):
            raise ValueError(f"{self}: needs 0 < first <= cap, factor >= 1 and 0 <= jitter < 1")

    def pause(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 for the first)."""
        base = self.cap
        if attempt < 64:  # past that, factor ** attempt is the cap anyway (or overflows)
            base = min(self.cap, self.first * self.factor**attempt)
        return base * (1 - self.jitter * rng.random())

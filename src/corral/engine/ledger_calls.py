"""The per-call table under the ledger (:mod:`corral.engine.ledger`): each call's current
attempt, phase and holder in flat arrays indexed by call (100,000 calls cost a few MB), the
counts by phase, and the moves between phases that keep them consistent. No decisions here:
the ledger makes them."""

from __future__ import annotations

from array import array

from ..errors import JobError
from ..job import Attempt, JobState
from ..resources import Resources
from .ledger_values import STATE_OF_PHASE, Counts, Phase

WAITING, TAKEN, DONE = Phase.WAITING.value, Phase.TAKEN.value, Phase.DONE.value


class Calls:
    """The state of ``n_calls`` calls. Written under the engine's lock; each query reads
    one value, whole at any moment, and may run in a user thread."""

    def __init__(self, n_calls: int) -> None:
        self.n_calls = n_calls
        self._attempt = array("i", bytes(4 * n_calls))  # the current attempt of each call
        self._phase = bytearray(n_calls)  # Phase values; WAITING is 0
        self._holder: list[str | None] = [None] * n_calls  # who took the current attempt
        self._counts = [n_calls, 0, 0, 0, 0]  # calls by phase
        self._retried = 0
        self._started = 0  # attempts elements took (how fast calls start)
        self._errors: dict[int, BaseException] = {}  # FAILED calls' errors
        self._history: dict[int, list[Attempt]] = {}  # failed attempts, by call
        self._next: dict[int, Resources] = {}  # what a retried call's attempt asks for
        self._held: dict[str, set[int]] = {}  # element -> TAKEN calls it holds
        self._stale: dict[tuple[int, int], str] = {}  # takes of past attempts, no result yet
        self._due: set[int] = set()  # calls to look at: an element's grace ran out

    def phase(self, call: int) -> Phase:
        """Where the call's current attempt stands."""
        return Phase(self._phase[call])

    def is_final(self, call: int) -> bool:
        """True once the call's future is settled (``phase(call).is_final``, without the enum)."""
        return self._phase[call] >= DONE

    def state(self, call: int) -> JobState:
        """The call's state as its future shows it; a failure shows its error's state."""
        phase = self.phase(call)
        error = self._errors.get(call) if phase is Phase.FAILED else None
        return error.state if isinstance(error, JobError) else STATE_OF_PHASE[phase]

    def attempt(self, call: int) -> int:
        """The call's current attempt (0 for the first)."""
        return self._attempt[call]

    def error(self, call: int) -> BaseException | None:
        """The error a FAILED call ended with."""
        return self._errors.get(call)

    def history(self, call: int) -> tuple[Attempt, ...]:
        """The call's failed attempts, in order."""
        return tuple(self._history.get(call, ()))

    def resources(self, call: int) -> Resources | None:
        """What the call's current attempt asks for, when a retry changed it."""
        return self._next.get(call)

    def holder(self, call: int) -> str | None:
        """The element that took the call's current attempt, if any."""
        return self._holder[call]

    def unclaimed(self) -> list[int]:
        """Calls whose current attempt nobody (element or client) has taken, in order."""
        if not self._counts[WAITING]:
            return []
        return [call for call, phase in enumerate(self._phase) if phase == WAITING]

    def unclaimed_count(self) -> int:
        """How many calls :meth:`unclaimed` would list."""
        return self._counts[WAITING]

    @property
    def started(self) -> int:
        """How many attempts elements have taken so far (the pace calls start at)."""
        return self._started

    @property
    def done(self) -> bool:
        """True once every call has ended."""
        return self._counts[WAITING] + self._counts[TAKEN] == 0

    def holders(self) -> set[str]:
        """Elements that took a call which has not ended: one that was requeued (pending
        again) will run it again, so it must not be cancelled as idle."""
        stale = {who for (call, _), who in self._stale.items() if self._phase[call] < Phase.DONE}
        return set(self._held) | stale

    def counts(self) -> Counts:
        """Calls by phase, and how many attempts were retried."""
        waiting, taken, done, failed, cancelled = self._counts
        return Counts(waiting, taken, done, failed, cancelled, self._retried)

    def _set_phase(self, call: int, phase: Phase) -> None:
        self._counts[self._phase[call]] -= 1
        self._counts[phase] += 1
        self._phase[call] = phase

    def _hold(self, call: int, element: str) -> None:
        self._holder[call] = element
        self._held.setdefault(element, set()).add(call)

    def _release(self, call: int) -> None:
        """The call's holder no longer holds it (it ended, or moved on to another attempt)."""
        who = self._holder[call]
        if who is not None and who in self._held:
            self._held[who].discard(call)
            if not self._held[who]:
                del self._held[who]

    def _end(self, call: int, phase: Phase) -> None:
        self._release(call)
        self._set_phase(call, phase)
        self._due.discard(call)

    def _advance(self, call: int, attempt: int, resources: Resources) -> None:
        """Move the call on to ``attempt``, waiting to be taken."""
        self._release(call)
        self._attempt[call] = attempt
        self._holder[call] = None
        self._next[call] = resources
        self._set_phase(call, Phase.WAITING)
        self._due.discard(call)
        self._retried += 1

"""The elements' streams, read for the engine: :class:`Intake` turns what one tick's scan
found appended (one transport operation, see :meth:`corral.store.batch.BatchStore.scan_streams`)
into ledger events, and hands the ledger's decisions to its batch to carry out (see
:mod:`corral.engine.tracking`). It also says when the streams tell all the scheduler would
(:meth:`Intake.quiet`), and decides what the reader of an ended element still holds."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import CorralError, JobCancelledError, UnsafeWorkDirError
from ..job import JobState
from ..store.batch import BatchStore, Outcome
from ..store.protocol import BEAT
from ..store.replay import Damaged, Event, Ran, RanAll, Replay, Skipped, TookAll
from ..store.stream_codec import Result, Results
from ..transports.base import Scan
from .echo import Echo, Sink
from .elements import SubState
from .futures import CorralFuture, Futures, decode_outcome
from .ledger import Ledger

log = logging.getLogger(__name__)

Completion = tuple[CorralFuture, bool, Any]  # future, ok, value or exception
Apply = Callable[..., list[Completion]]  # BatchState.apply(decisions, values=None)


def _pending(sub: SubState, index: int) -> bool:
    """The scheduler's last report had element ``index`` of ``sub`` waiting to start."""
    status = sub.status.get(index)
    return status is not None and status.state is JobState.PENDING


class Intake:
    """The stream side of one batch (its ``store``, ``ledger``, ``replay`` and ``futures``);
    ``apply`` carries out the ledger's decisions."""

    def __init__(
        self, store: BatchStore, ledger: Ledger, replay: Replay, futures: Futures, apply: Apply,
        echo: Sink | None = None,
    ) -> None:  # fmt: skip
        self.store, self.ledger, self.replay, self.futures = store, ledger, replay, futures
        self.apply = apply
        self.echo = None if echo is None else Echo(store, replay, echo)  # the calls' lines, to the client
        self.first_claim_at: float | None = None  # when we first saw a call start

    def wanted(self) -> Scan:
        """What this batch's scan reads: its streams from their cursors, and its calls'
        output files too when they are echoed (in the same one operation)."""
        return self.store.stream_scan(self._cursors(), output=self.echo is not None)

    def _cursors(self) -> dict[str, int]:
        cursors = self.replay.cursors()
        if self.echo is not None:
            cursors.update(self.echo.cursors())
        return cursors

    def scan(self, appended: Mapping[str, bytes] | None = None) -> list[Completion]:
        """Read what the elements appended since the last scan (one transport operation),
        or take ``appended``, what a scan of several batches read for this one as
        :meth:`wanted` said; return the futures it completes."""
        echo = self.echo
        if appended is None:
            try:
                appended = self.store.scan_streams(self._cursors(), output=echo is not None)
            except UnsafeWorkDirError as exc:  # a stream not the user's own: nothing of it is read
                return self._refuse_all(exc)
        now = time.monotonic()
        completions: list[Completion] = []
        for name, data in appended.items():
            for event in self.replay.feed(name, data, now):
                if echo is not None:
                    echo.saw(event)
                completions += self._take(event, now)
        if echo is not None:
            echo.take(appended)
        return completions

    def _refuse_all(self, error: UnsafeWorkDirError) -> list[Completion]:
        """The batch folder holds a stream that is not the user's alone: no result of it can
        be trusted, so every call not ended yet fails with the reason."""
        decisions = [self.ledger.abandon(call, error) for call in range(len(self.futures))]
        return self.apply([d for d in decisions if d is not None])

    def _take(self, event: Event, now: float) -> list[Completion]:
        kind = type(event)
        if kind is TookAll:
            assert isinstance(event, TookAll)
            started = self.ledger.taken_all(event.tasks, event.element)
            if started and self.first_claim_at is None:
                self.first_claim_at = now
            for call in started:
                future = self.futures.made(call)  # one made later starts RUNNING
                if future is not None:
                    future.mark_running()
            return []
        if kind is RanAll:
            assert isinstance(event, RanAll)
            return self._finished_all(event.run, event.element)
        if kind is Ran:
            assert isinstance(event, Ran)
            return self._finished(event.call, event.attempt, event.element, event.result)
        if kind is Skipped:
            assert isinstance(event, Skipped)
            decisions = self.ledger.skipped(event.call, event.attempt)
            if not decisions and self.ledger.attempt(event.call) == event.attempt:
                # The client's cancel lost the race with the element's claim, yet the element
                # saw it: the call is cancelled after all.
                error = JobCancelledError(
                    state=JobState.CANCELLED, job_id=event.element, call=event.call, batch=self.store.name,
                    reason="cancelled by the client as its element took it",
                )  # fmt: skip
                return self._abandon(event.call, error)
            return self.apply(decisions)
        assert isinstance(event, Damaged)
        where = f"{self.store.stream_path(event.element)} at offset {event.offset}"
        if event.call is None or not 0 <= event.call < len(self.futures):
            log.warning("%s: not a record corral wrote (%s)", where, event.reason)
            return []
        if event.attempt is not None and event.attempt != self.ledger.attempt(event.call):
            return []
        damaged = CorralError(f"call {event.call} of {self.store.name}: {where}: {event.reason}")
        return self._abandon(event.call, damaged)

    def _finished(self, call: int, attempt: int, element: str, result: Result) -> list[Completion]:
        if not 0 <= call < len(self.futures) or self.ledger.phase(call).is_final:
            return []
        if result.ok and not result.in_file:  # the common case, without the Outcome around it
            try:
                value = pickle.loads(result.payload)
            except Exception:  # noqa: BLE001 - decode_outcome below says why, in the call's error
                pass
            else:
                return self.apply(
                    self.ledger.finished(call, attempt, True, None, element, result.host), {call: value}
                )
        try:
            outcome = self._outcome(call, attempt, element, result)
        except UnsafeWorkDirError as exc:  # not the user's own file: refused unread
            return self._abandon(call, exc)
        except (OSError, ValueError) as exc:  # not an outcome corral wrote: fail the call
            where = self.store.result_path(call, attempt) if result.in_file else f"attempt {attempt}"
            return self._abandon(call, CorralError(f"call {call} of {self.store.name}: {where}: {exc}"))
        ok, value = decode_outcome(outcome, call, self.store.name, self.store.path)
        decisions = self.ledger.finished(call, attempt, ok, None if ok else value, element, result.host)
        return self.apply(decisions, {call: value} if ok else {})

    def _finished_all(self, run: Results, element: str) -> list[Completion]:
        """A run of calls that returned: unpickled, and settled in bulk (see
        :meth:`Ledger.finished_all`); a value that cannot be unpickled here fails its call
        as :meth:`_finished` says."""
        n, is_final, values = len(self.futures), self.ledger.is_final, {}
        tasks, odd = [], []
        for i, (call, attempt, payload) in enumerate(zip(run.calls, run.attempts, run.payloads, strict=True)):
            if not 0 <= call < n or is_final(call):
                continue
            try:
                values[call] = pickle.loads(payload)
            except Exception:  # noqa: BLE001 - _finished says why, in the call's error
                odd.append(i)
                continue
            tasks.append((call, attempt))
        resolved, decisions = self.ledger.finished_all(tasks, element, run.host)
        futures = self.futures.settle_all(resolved, values)
        completions: list[Completion] = [(future, True, values[future.call]) for future in futures]
        completions += self.apply(decisions, values)
        if odd:
            results = list(run.each())
            for i in odd:
                completions += self._finished(results[i].call, results[i].attempt, element, results[i])
        return completions

    def _abandon(self, call: int, error: BaseException) -> list[Completion]:
        """The client gives up on the call's current attempt with ``error`` (see
        :meth:`Ledger.abandon`); nothing when the call has ended already."""
        found = self.ledger.abandon(call, error)
        return self.apply([found] if found is not None else [])

    def _outcome(self, call: int, attempt: int, element: str, result: Result) -> Outcome:
        if result.in_file:
            return self.store.read_large_result(call, attempt)
        return Outcome(
            result.ok, result.payload, type_name=result.type_name, message=result.message,
            traceback=result.traceback, element=element, host=result.host,
            started=result.started, finished=result.finished,
        )  # fmt: skip

    def finish_streams(self, subs: Sequence[SubState], now: float) -> list[Completion]:
        """Elements that are final write no more: what their streams' readers still hold (a
        torn record, and whole ones a damaged length hid) is decided now, before their calls
        are taken for orphans."""
        completions: list[Completion] = []
        for sub in subs:
            if sub.job_id is None:
                continue
            for index in sub.final_at:
                for event in self.replay.finish(sub.element(index)):
                    completions += self._take(event, now)
        return completions

    def quiet(self, subs: Sequence[SubState], now: float) -> bool:
        """True when the scheduler has nothing to tell about this batch that its streams do
        not: every element that started is heard from (its stream grew within three
        heartbeats) and none wrote its End without the scheduler confirming it final; every
        element not heard from yet was last reported PENDING (its Start will show in its
        stream). While an element's state is not known yet, or it is starting, or it failed
        with its exit code not known yet, the scheduler is asked as usual: it alone can say."""
        final = {sub.element(i) for sub in subs if sub.job_id is not None for i in sub.final_at}
        heard = self.replay.elements
        for sub in subs:
            if sub.job_id is None or sub.all_final and not sub.exit_unknown:
                continue
            if sub.exit_unknown or any(
                sub.element(i) not in heard and i not in sub.final_at and not _pending(sub, i)
                for i in range(sub.plan.elements)
            ):
                return False
        for element, log in heard.items():
            if element in final:
                continue
            if log.end is not None or now - log.grew_at > 3 * BEAT:
                return False
        return True

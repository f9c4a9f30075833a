"""Stopping a call in time and resuming it later: time-limit warnings, SIGTERM, checkpoints.

A job asks its scheduler for a warning signal (SIGUSR1) some time before its time limit
(``signal_grace``); preemption and cancellation send SIGTERM. The worker catches both:

* a call whose function is a :class:`Checkpointable` is interrupted at once; its
  ``checkpoint()`` says what to run next, which the worker saves in the work dir; the next
  run of the call (after the job is requeued, or in a resubmitted job) starts from there;
* any other call is left to finish if it can in the time left after a warning; SIGTERM
  ends it, as it always did;
* no new call starts. After a warning, an element with work left asks to be requeued, as
  its backend says in the plan (a command to run, or an exit code: see
  :class:`corral.store.protocol.Requeue`); after SIGTERM it just ends: a preempted job is
  requeued by the scheduler, a cancelled one is not.

A call is requeued from a checkpoint at a time limit at most ``max_requeues`` times; after
that it runs on and, if it does not finish, fails with the time-limit error.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

#: The signal the scheduler sends ``signal_grace`` seconds before the time limit.
WARNING_SIGNAL = signal.SIGUSR1


class Checkpointable:
    """Base class for a callable that can stop before its time limit and carry on later.

    Subclass it, do the work in ``__call__`` and keep progress in attributes of ``self``.
    When the job is about to be stopped (time limit, preemption), the call is interrupted
    and :meth:`checkpoint` is asked for the call to run next; by default that is the same
    object, with the progress it has made, and the same arguments::

        class Count(corral.Checkpointable):
            def __init__(self) -> None:
                self.done = 0

            def __call__(self, n: int) -> int:
                while self.done < n:
                    time.sleep(1)  # one unit of work
                    self.done += 1
                return self.done

    Override ``checkpoint`` to save large state to a file first and return a
    :class:`Resume` that knows where to find it.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must define __call__")

    def checkpoint(self, *args: Any, **kwargs: Any) -> Resume:
        """The call to run next, given the arguments of the interrupted one. It is pickled
        when this returns, so ``self`` goes with the progress it has made."""
        return Resume(self, *args, **kwargs)


@dataclass(frozen=True, init=False)
class Resume:
    """The call to run in place of an interrupted one: ``fn(*args, **kwargs)``."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        if not callable(fn):
            raise TypeError(f"Resume needs a callable, got {fn!r}")
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "kwargs", kwargs)


class Interrupted(BaseException):
    """Raised inside a checkpointable call to stop it (a BaseException, like
    KeyboardInterrupt, so that the call's own ``except Exception`` does not swallow it)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass
class StopSignals:
    """What the scheduler has told this worker: a time-limit warning, a termination."""

    warned: bool = False  # SIGUSR1: the time limit is near
    terminated: bool = False  # SIGTERM: preemption, cancellation, or the limit itself
    _running: bool = False  # a call runs
    _checkpointable: bool = False  # ... and can be interrupted: SIGTERM does
    _on_warning: bool = False  # ... and has requeues left: the warning does too
    #: Called before SIGTERM ends the process during an ordinary call (the worker writes
    #: the results it holds); its errors are ignored.
    before_exit: Callable[[], None] | None = None

    @property
    def stopping(self) -> bool:
        return self.warned or self.terminated

    def install(self) -> None:
        """Catch the warning signal and SIGTERM in this (main) thread."""
        signal.signal(WARNING_SIGNAL, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        term = signum == signal.SIGTERM
        self.terminated = self.terminated or term
        self.warned = self.warned or not term
        if self._running and self._checkpointable and (term or self._on_warning):
            self._running = False
            raise Interrupted("SIGTERM" if term else "time limit near")
        if self._running and term:  # an ordinary call ends as SIGTERM always ended it
            if self.before_exit is not None:
                with contextlib.suppress(Exception):
                    self.before_exit()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    @contextlib.contextmanager
    def running(self, checkpointable: bool, on_warning: bool) -> Iterator[None]:
        """Around a call. SIGTERM interrupts a ``checkpointable`` one (raises Interrupted
        inside), and so does the time-limit warning when ``on_warning`` (the call has
        requeues left); SIGTERM ends the process during any other call. A signal that came
        before the call began interrupts it at once."""
        self.begin(checkpointable, on_warning)
        try:
            yield
        finally:
            self.end()

    def begin(self, checkpointable: bool, on_warning: bool) -> None:
        """:meth:`running` as two calls (the worker's hot path): this before the call, and
        :meth:`end` after it, however it ended."""
        if checkpointable and (self.terminated or (self.warned and on_warning)):
            raise Interrupted("SIGTERM" if self.terminated else "time limit near")
        self._running, self._checkpointable, self._on_warning = True, checkpointable, on_warning

    def end(self) -> None:
        self._running = False

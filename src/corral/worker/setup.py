"""The node setup: Python callables of ``setup=``, a Pool's initializer, and the client's
logging, run on the node once per worker process before its first call.

The front-ends wrap the batch's function in a :class:`Prepared` (only when there is something
to run: the default costs nothing), which travels to the node with it. Before a call runs,
:meth:`Prepared.prepare` does, once per process for each front-end's setup (its ``key``):

1. the client's logging (:class:`LogSettings`, taken when the calls were submitted): when this
   process is a corral job's (not the client's own, as with the sequential backend) and its
   root logger has no handler yet, the root logger gets the client's root level and a handler
   writing each record to the running call's stderr, formatted as the client's first root
   handler formats (its format string, date format and style; plain ``%(message)s`` when the
   client had none);
2. the setup callables, in order, without arguments.

Logging comes first so that the setup's own log lines show; a setup that configures logging
itself passes ``force=True`` to ``logging.basicConfig`` (or the front-end ``forward_logging=False``).

A worker process is one array element (one per task with ``per_task``), so "once per
process" is once per element. A setup that raises fails the call it came before, and every
later call of that process, with the setup's own exception (a note says that the setup
raised it, not the function, which did not run); it is not run again in that process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

#: The variable corral's worker sets in a job's processes (``corral.worker.run.IN_JOB_ENV``):
#: without it, the calls run in the client's own process, whose logging is the user's.
IN_JOB_ENV = "CORRAL_IN_JOB"

#: What each setup (by key) came to in this process: None when it ran, else its exception.
_prepared: dict[str, BaseException | None] = {}
_lock = threading.RLock()  # calls may run in threads (the sequential backend); a setup runs once


@dataclass(frozen=True)
class LogSettings:
    """The client's root logging, as the calls get it (see the module doc)."""

    level: int
    format: str | None  # None: logging's default, ``%(message)s``
    datefmt: str | None = None
    style: Literal["%", "{", "$"] = "%"

    @classmethod
    def of_client(cls) -> LogSettings | None:
        """This process's root level and first root handler's format; None when there is
        nothing to pass on (no handler, and the level a fresh process has anyway)."""
        root = logging.getLogger()
        handlers = root.handlers
        if not handlers and root.level == logging.WARNING:
            return None
        formatter = handlers[0].formatter if handlers else None
        if formatter is None:
            return cls(root.level, None)
        # The style's subclasses first: both derive from PercentStyle.
        style: Literal["%", "{", "$"] = "%"
        if isinstance(formatter._style, logging.StrFormatStyle):
            style = "{"
        elif isinstance(formatter._style, logging.StringTemplateStyle):
            style = "$"
        return cls(root.level, formatter._fmt, formatter.datefmt, style)

    def apply(self) -> bool:
        """Set the root logger as the module doc says; False (nothing done) outside a corral
        job's process, or when the root logger has a handler already."""
        root = logging.getLogger()
        if os.environ.get(IN_JOB_ENV) is None or root.handlers:
            return False
        handler = CallStderr()
        handler.setFormatter(logging.Formatter(self.format, self.datefmt, style=self.style))
        root.addHandler(handler)
        root.setLevel(self.level)
        return True


class CallStderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a record is emitted (the running call's), not
    as it was when the handler was made."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - as logging.StreamHandler: report, never raise
            self.handleError(record)


class Prepared:
    """``fn``, preceded once per process by the setup ``steps`` and the client's logging
    (module doc). ``key`` names the setup: one per Executor, Pool or task function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        steps: tuple[Callable[[], object], ...],
        log: LogSettings | None,
        key: str,
    ) -> None:
        self.fn, self.steps, self.log, self.key = fn, steps, log, key
        self.__name__: str = getattr(fn, "__name__", "call")  # what its jobs and work dir are called
        self.__qualname__: str = getattr(fn, "__qualname__", self.__name__)

    def prepare(self) -> None:
        """Run the setup if this process has not; raise its exception if it failed."""
        with _lock:
            if self.key not in _prepared:
                _prepared[self.key] = self._run()
            failure = _prepared[self.key]
        if failure is not None:
            raise failure

    def _run(self) -> BaseException | None:
        step: object = "the client's logging"
        try:
            if self.log is not None:
                self.log.apply()
            for step in self.steps:
                step()
        except Exception as exc:  # noqa: BLE001 - it fails the calls, as their outcome
            name = getattr(step, "__qualname__", None) or repr(step)
            if sys.version_info >= (3, 11):  # notes are 3.11's; on 3.10 the exception alone
                exc.add_note(
                    f"(raised by the node setup {name}, not by the function: it ran before the call, "
                    "and the function did not run, here nor for any later call of this element)"
                )
            return exc
        return None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.prepare()
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:  # the user's function, in messages that name it
        return repr(self.fn)

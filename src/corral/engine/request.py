"""The one door into the engine: a :class:`Request` is a batch of calls of one function, with
everything the engine needs to run them. Every front-end builds one (an Executor's ``map``
or burst of ``submit``, a Pool's ``map`` or burst of ``apply_async``, a ``@task`` batch) and
hands it to :meth:`corral.engine.cluster.Cluster.submit`, which charges the submission
budget (see :mod:`.budget`) once per request, and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..environment import Environment
from ..resources import Resources
from ..retry import RetryPolicy
from .dependencies import Needs
from .submitting import Call
from .throttle import Throttle


@dataclass(frozen=True, kw_only=True, eq=False)
class Request:
    """What to run and how. Frozen: the engine never changes what a front-end asked for.

    ``calls`` are ``(args, kwargs)`` pairs; a front-end that pickled them already (to refuse
    a bad argument at its own ``submit`` line) gives ``payloads`` instead, one per call.
    """

    fn: Callable[..., Any]
    resources: Resources
    calls: Sequence[Call] = ()
    payloads: Sequence[bytes] | None = None
    #: The big values ``payloads`` refer to, by key (see :class:`corral.store.pickling.Blobs`).
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    #: Packing: calls per array element; None lets the elements pull calls (see planning).
    chunksize: int | None = None
    #: The most elements of each array running at once (``%N``).
    max_running: int | None = None
    #: The limit shared with the other requests of the same executor or pool.
    throttle: Throttle | None = None
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_retries=0))
    #: Calls of other batches this one runs after (the scheduler's dependency).
    needs: Needs | None = None
    #: An element whose call failed exits non-zero, so that the scheduler sees the failure.
    strict: bool = False
    #: A shell command written into the job script; the worker hands it to ``fn``.
    command: str | None = None
    #: What the batch (its folder, its jobs) is called; default: the function's name.
    name: str | None = None
    #: Let code that runs inside a corral job submit this.
    allow_nested: bool = False
    #: The submission budget of the front-end (0: none), and what one submission is called
    #: in the budget's error ("map", "call", "batch").
    budget: int = 0
    what: str = "map"
    #: Where the jobs run: the working directory when the request was made (a burst of
    #: submits is sent later, and the caller may have changed directory meanwhile).
    chdir: str = field(default_factory=os.getcwd)
    #: What runs around the worker on the node: setup lines, variables, interpreter, ...
    environment: Environment = Environment()
    #: Where the lines the calls print go as they arrive (see :mod:`corral.engine.echo`):
    #: (call, "out" or "err", line); None: they stay in the work dir only.
    echo: Callable[[int, str, str], None] | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"{self.fn!r} is not callable")
        if self.chunksize is not None and (
            not isinstance(self.chunksize, int) or isinstance(self.chunksize, bool) or self.chunksize < 1
        ):
            raise ValueError(f"chunksize={self.chunksize!r} must be a whole number of at least 1")
        if self.payloads is not None and self.calls:
            raise ValueError("a request holds calls or their payloads, not both")

    def __len__(self) -> int:
        """How many calls the request holds."""
        return len(self.payloads) if self.payloads is not None else len(self.calls)

    @property
    def batch_name(self) -> str:
        """The name its batch folder and jobs carry: ``name``, else the function's (a callable
        object: its class's)."""
        return self.name or str(getattr(self.fn, "__name__", None) or type(self.fn).__name__)

"""The client's half of the node setup (the node's is :mod:`corral.worker.setup`): the Python
callables of ``setup=`` taken out of a front-end's options, and the batch's function wrapped
to run them, after the client's logging, once per element.

One mechanism for the three front-ends: an Executor's and a Pool's setup (the Pool's
``initializer(*initargs)`` is one more step of it), and a task function's. Callables come
only from code: the options' shell lines go on to the configuration as before, and a
configuration that held a callable is refused there with a message that says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..environment import split_setup
from ..worker.setup import LogSettings, Prepared


class NodeSetup:
    """What runs on the node before a front-end's calls: its ``steps`` (callables of no
    arguments, in order) and, unless the job's environment says ``forward_logging=False``,
    the client's logging as it is when the calls are submitted."""

    def __init__(self, steps: tuple[Callable[[], object], ...] = ()) -> None:
        self.steps = steps
        self.key = uuid.uuid4().hex  # once per process for this front-end's setup

    @classmethod
    def take(cls, options: Mapping[str, Any]) -> tuple[dict[str, Any], NodeSetup]:
        """``options`` without the callables of their ``setup`` (ResourceError for an item
        that is neither text nor callable), and a NodeSetup running those callables."""
        rest = dict(options)
        lines, steps = split_setup(rest.pop("setup", None))
        if lines is not None:
            rest["setup"] = lines
        return rest, cls(steps)

    def and_then(self, step: Callable[[], object]) -> NodeSetup:
        """This setup with ``step`` run after its own steps, under the same key."""
        found = NodeSetup((*self.steps, step))
        found.key = self.key
        return found

    def wrap(self, fn: Callable[..., Any], *, forward_logging: bool) -> Callable[..., Any]:
        """``fn`` preceded on the node by this setup, and by the client's logging as it is
        now if ``forward_logging`` (the job environment's); ``fn`` itself when there is
        nothing to run (no step, and no logging to pass on), so that the default costs
        nothing, and when ``fn`` is not callable, for the request to refuse it as it is."""
        log = LogSettings.of_client() if forward_logging else None
        if (not self.steps and log is None) or not callable(fn):
            return fn
        return Prepared(fn, self.steps, log, self.key)

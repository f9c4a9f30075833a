"""How the functions of a ``Batch`` travel to the nodes: several functions in one batch.

A ``Batch`` may bundle calls of different ``@task`` functions into one array; the batch's
function is then a :class:`Bundle` of them, and each call names its function by position.
A task function defined in an importable module travels by reference (module and name, as
pickle does for plain functions), so the node imports it rather than receiving a copy of its
module's globals; one defined in ``__main__`` travels by value, as cloudpickle sends it.
Imported by the worker on every node: keep it light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class Bundle:
    """Calls ``functions[i](*args, **kwargs)`` for a call ``(i, args, kwargs)``."""

    def __init__(self, functions: tuple[Callable[..., Any], ...]) -> None:
        self.functions = functions
        names = list(dict.fromkeys(getattr(f, "__name__", "call") for f in functions))
        self.__name__ = "+".join(names)[:40]  # what its jobs and work dir are called

    def __call__(self, which: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.functions[which](*args, **kwargs)

    def __repr__(self) -> str:
        names = ", ".join(getattr(f, "__name__", repr(f)) for f in self.functions)
        return f"Bundle({names})"


def import_function(module: str, qualname: str) -> Callable[..., Any]:
    """The task function ``module.qualname``, imported on the node (still a task there)."""
    function: Callable[..., Any] | None = lookup(importlib.import_module(module), qualname)
    if function is None:
        raise ImportError(f"module {module!r} on this node has no task {qualname!r}")
    return function


def lookup(scope: Any, qualname: str) -> Any:
    """What the dotted ``qualname`` names inside ``scope`` (a module), or None."""
    for part in qualname.split("."):
        scope = getattr(scope, part, None)
    return scope

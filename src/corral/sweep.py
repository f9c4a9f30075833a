"""Parameter sweeps with early stopping: ``corral.sweep``.

::

    from corral import sweep

    def train(config):
        for epoch in range(1, 82):
            loss = ...                             # one epoch of training
            sweep.log(epoch, loss=loss)            # may raise sweep.Pruned
        return loss

    space = {"lr": sweep.loguniform(1e-5, 1e-1), "layers": sweep.choice([2, 4, 8])}
    result = sweep.Sweep(train, space, metric="loss", mode="min", trials=81, max_running=8,
                         scheduler=sweep.ASHA(min_t=1, max_t=81, eta=3), time="1h").run()
    print(result.best().config, result.table(rows=10))

The trials run as one batch of the engine on any backend (and ``host=``); see
:mod:`corral.frontends.sweep` for the parts and ``docs/sweep.md`` for the guide. Names are
loaded on first use: a node running a trial imports only what ``log`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frontends.sweep.driver import Sweep
    from .frontends.sweep.optuna import Optuna
    from .frontends.sweep.results import STATUSES, SweepResult, Trial
    from .frontends.sweep.schedulers import ASHA, Median
    from .frontends.sweep.search import Grid, Random
    from .frontends.sweep.space import choice, grid, integer, loguniform, uniform
    from .frontends.sweep.trial import Pruned, current_trial, log
    from .frontends.sweep.watching import attach

_LAZY = {
    "Sweep": "driver", "attach": "watching",
    "STATUSES": "results", "SweepResult": "results", "Trial": "results",
    "ASHA": "schedulers", "Median": "schedulers",
    "Grid": "search", "Random": "search", "choice": "space", "grid": "space", "integer": "space",
    "loguniform": "space", "uniform": "space",
    "Pruned": "trial", "current_trial": "trial", "log": "trial",
    "Optuna": "optuna",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'corral.sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".frontends.sweep.{_LAZY[name]}", "corral"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ASHA", "Grid", "Median", "Optuna", "Pruned", "Random", "STATUSES", "Sweep", "SweepResult", "Trial",
    "attach", "choice", "current_trial", "grid", "integer", "log", "loguniform", "uniform",
]  # fmt: skip

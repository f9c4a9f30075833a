"""Model-based search through Optuna's samplers: ``sweep.Optuna(sampler)``, by ask and tell.

A model-based search chooses each config from the results before it, so the configs cannot
all be written when the batch is submitted, as :class:`~.space.Random` and
:class:`~.space.Grid` configs are. Here a trial's call carries only its id, and:

* the driver chooses configs (``study.ask`` with the space's distributions) and writes each
  to ``configs/<trial>.json`` in the sweep folder: ``ahead`` of them beyond the trials that
  ended (by default ``max_running``, so that an element never waits for long), then one more
  each time a trial ends, after telling Optuna how it ended;
* a trial waits where it runs for its config (at most ``wait`` seconds: then it fails with
  :class:`ConfigNotChosen`, which a resumed sweep runs again). So this search, unlike the
  others, needs its driver running for the trials to start; pruning still needs no driver.

Optuna only samples: ASHA or median stopping still decide on the nodes, and Optuna is told
each trial's last value of the metric (pruned trials as PRUNED, failed ones as FAIL). Optuna
is imported only when such a search runs (``pip install optuna``).
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import CorralError
from ...store.sweeps import SweepFiles
from .space import (
    Config,
    Dimension,
    Space,
    build,
    check_space,
    choice,
    dimensions,
    grid,
    integer,
    loguniform,
    uniform,
)

_OPTUNA_CHOICES = (type(None), bool, int, float, str)


class ConfigNotChosen(CorralError):
    """A trial of a model-based search waited for its config longer than the search's
    ``wait``: no driver chose it (the driver was stopped). Running the sweep again runs it."""


@dataclass(frozen=True)
class Optuna:
    """Choose configs with an Optuna ``sampler`` (default: ``TPESampler(seed=seed)``), one at
    a time as trials end (see the module doc). ``trials`` must be given to the sweep."""

    sampler: Any = None
    seed: int | None = None
    ahead: int | None = None  #: configs chosen beyond the trials that ended (default: max_running, else 4)
    wait: float = 600.0  #: seconds a trial waits where it runs for its config

    #: The configs are chosen while the sweep runs, not listed up front.
    lazy: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.ahead is not None and (not isinstance(self.ahead, int) or self.ahead < 1):
            raise ValueError(f"Optuna(ahead={self.ahead!r}): a whole number >= 1")
        if not self.wait > 0:
            raise ValueError(f"Optuna(wait={self.wait!r}): seconds, > 0")

    def count(self, space: Space, trials: int | None) -> int:
        """``trials``, once the space is checked as Optuna can sample it."""
        distributions(space)
        if trials is None or isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"an Optuna search needs trials, a whole number >= 1; got trials={trials!r}")
        return trials

    def configs(self, space: Space, trials: int | None) -> list[Config]:
        raise TypeError("an Optuna search chooses its configs while the sweep runs (Optuna.asker)")

    def resolved(self) -> Optuna:
        """Itself when seeded (or given a sampler), else a copy with a fresh seed to record."""
        if self.seed is not None or self.sampler is not None:
            return self
        return dataclasses.replace(self, seed=secrets.randbelow(2**31))

    def asker(self, space: Space, mode: str) -> Asker:
        """The study that chooses this sweep's configs (Optuna is imported here)."""
        return Asker(self, space, mode)


def _name(path: tuple[str, ...]) -> str:
    return ".".join(path)


def config_of(space: Space, values: dict[str, Any]) -> Config:
    """The config that chosen ``values`` (by dotted path, as ``configs/<trial>.json`` holds
    them) make of ``space``: the driver's view of a trial, and the trial's own."""
    paths = {_name(path): path for path, _ in dimensions(space)}
    return build(space, {paths[name]: value for name, value in values.items() if name in paths})


def distributions(space: Space) -> dict[str, Any]:
    """The space's dimensions as Optuna distributions, by dotted path; ValueError for a
    choice Optuna cannot hold (its values must be None, bool, int, float or str)."""
    check_space(space)
    found: dict[str, Any] = {}
    for path, dim in dimensions(space):
        found[_name(path)] = _distribution(path, dim)
    return found


def _distribution(path: tuple[str, ...], dim: Dimension) -> Any:
    import optuna.distributions as d

    if isinstance(dim, uniform | loguniform):
        return d.FloatDistribution(dim.low, dim.high, log=isinstance(dim, loguniform))
    if isinstance(dim, integer):
        return d.IntDistribution(dim.low, dim.high, log=dim.log)
    if isinstance(dim, choice | grid):
        if not all(isinstance(v, _OPTUNA_CHOICES) for v in dim.values):
            raise ValueError(
                f"{_name(path)}: an Optuna search holds choices of None, bool, int, float or str only; "
                f"{dim!r} has others (use Random search, or choose among names and look them up in train)"
            )
        return d.CategoricalDistribution(dim.values)
    raise ValueError(f"{_name(path)}: Optuna cannot sample {dim!r}")


class Asker:
    """One sweep's Optuna study: ``ask(trial)`` chooses trial's config values (by dotted path),
    ``tell(trial, ...)`` gives Optuna its end; trials chosen by an earlier driver are told
    with ``values`` (their config file's), as trials Optuna did not ask for."""

    def __init__(self, search: Optuna, space: Space, mode: str) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = search.sampler or optuna.samplers.TPESampler(seed=search.seed)
        self.study = optuna.create_study(
            direction="minimize" if mode == "min" else "maximize", sampler=sampler
        )
        self.distributions = distributions(space)
        self._asked: dict[int, Any] = {}

    def ask(self, trial: int) -> dict[str, Any]:
        asked = self.study.ask(self.distributions)
        self._asked[trial] = asked
        return {name: asked.params[name] for name in self.distributions}

    def tell(
        self, trial: int, status: str, value: float | None, step: float | None = None,
        values: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """How trial ended: ``completed`` with its last ``value``, ``pruned``, or anything
        else (failed); ``step``, where ``value`` was logged (a pruned trial's value there is
        what TPE learns from it); ``values`` for a trial this study did not ask."""
        import optuna

        state = {"completed": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}
        kind = state.get(status, optuna.trial.TrialState.FAIL)
        if kind is optuna.trial.TrialState.COMPLETE and (value is None or value != value):
            kind = optuna.trial.TrialState.FAIL  # Optuna takes no NaN for a complete trial
        known = value is not None and value == value and step is not None
        final = value if kind is optuna.trial.TrialState.COMPLETE else None
        intermediate = {int(step): float(value)} if known and value is not None and step is not None else {}
        asked = self._asked.pop(trial, None)
        if asked is not None:
            for at, seen in intermediate.items():
                asked.report(seen, at)
            self.study.tell(asked, final, state=kind)
        elif values is not None:
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=values, distributions=self.distributions, state=kind,
                    intermediate_values=intermediate, value=final,
                )
            )  # fmt: skip


class Chooser:
    """Chooses a model-based sweep's configs as its trials end, and writes them for the
    trials to find (see the module doc): ``ahead`` beyond the trials that ended, lowest ids
    first, each batch of choices in one write."""

    def __init__(
        self, search: Optuna, space: Space, mode: str, files: SweepFiles, trials: int, ahead: int
    ) -> None:
        self.asker = search.asker(space, mode)
        self.space = space
        self.files = files
        self.trials = trials
        self.ahead = ahead
        #: trial -> chosen values (by dotted path), those an earlier driver chose included
        self.chosen: dict[int, dict[str, Any]] = {t: v for t, v in files.read_configs().items() if t < trials}
        self._ended = 0
        self._next = 0

    def config(self, values: dict[str, Any]) -> Config:
        """The config that ``values`` (by dotted path) make of the space."""
        return config_of(self.space, values)

    def top_up(self) -> dict[int, Config]:
        """Choose configs until ``ahead`` trials beyond those that ended have one; write the
        new ones; return them, as configs, by trial."""
        want = min(self.trials, self._ended + self.ahead)
        new: dict[int, dict[str, Any]] = {}
        while len(self.chosen) < want:
            while self._next in self.chosen:
                self._next += 1
            new[self._next] = self.chosen[self._next] = self.asker.ask(self._next)
        if new:
            self.files.write_configs(new)
        return {trial: self.config(values) for trial, values in new.items()}

    def end(self, trial: int, status: str, value: float | None, step: float | None) -> dict[int, Config]:
        """Trial ended (``completed``, ``pruned``, ...) with ``value`` its last metric, at
        ``step``: tell Optuna, and choose the next configs (:meth:`top_up`)."""
        self._ended += 1
        if trial in self.chosen:  # a trial that never got its config taught nothing
            self.asker.tell(trial, status, value, step, values=self.chosen[trial])
        return self.top_up()

"""The searches that turn a space (:mod:`.space`) into trial configs: :class:`Random` and
:class:`Grid`, stdlib only.

Reproducibility: trial ``i`` samples its dimensions, in :func:`~.space.dimensions` order, from
its own ``random.Random(f"corral-sweep:{seed}:{i}")``. So a config depends only on (seed, i)
and on the space, never on the number of trials: the first 100 of 200 trials are the 100
trials of a run with the same seed. A search built without a seed draws a fresh one for each
``configs`` call; ``resolved()`` fixes it first, so that the seed a sweep used can be recorded
and given again.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import secrets
from dataclasses import dataclass
from typing import Protocol

from .space import Config, DimensionPath, Space, build, check_space, dimensions, grid


def _trial_rng(seed: int, index: int) -> random.Random:
    """The generator of trial ``index``: it depends on (seed, index) only, so that a config
    stays the same whatever the number of trials. A str seed is hashed with SHA-512, the same
    in every process (no salted hash)."""
    return random.Random(f"corral-sweep:{seed}:{index}")


def _check_seed(search: str, seed: object) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{search}(seed={seed!r}): seed must be an int or None")


def _fresh_seed() -> int:
    """A seed for a search given none: random, and small enough to read and type again."""
    return secrets.randbelow(2**31)


class Search(Protocol):
    """What a sweep asks of a search (:class:`Random`, :class:`Grid`)."""

    @property
    def seed(self) -> int | None:
        """The seed of the trials' generators; None draws a fresh one (see ``resolved``)."""
        ...

    def configs(self, space: Space, trials: int | None) -> list[Config]:
        """The trial configs, in trial order."""
        ...

    def count(self, space: Space, trials: int | None) -> int:
        """How many configs ``configs`` returns, checking the same things."""
        ...

    def resolved(self) -> Search:
        """This search with a seed: itself when it has one, else a copy with a fresh seed."""
        ...


@dataclass(frozen=True)
class Random:
    """Random search: ``trials`` configs (a whole number >= 1), every dimension sampled on its
    own (a ``grid`` dimension like a ``choice``). Config i depends only on (seed, i)."""

    seed: int | None = None

    def __post_init__(self) -> None:
        _check_seed("Random", self.seed)

    def count(self, space: Space, trials: int | None) -> int:
        """``trials``, once the space and trials are checked."""
        check_space(space)
        if trials is None or isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"random search needs trials, a whole number >= 1; got trials={trials!r}")
        return trials

    def configs(self, space: Space, trials: int | None) -> list[Config]:
        """``trials`` configs; without a seed, from a fresh one each call (see ``resolved``)."""
        count = self.count(space, trials)
        if self.seed is None:
            return self.resolved().configs(space, count)
        found = dimensions(space)
        configs = []
        for index in range(count):
            rng = _trial_rng(self.seed, index)
            configs.append(build(space, {path: dim.sample(rng) for path, dim in found}))
        return configs

    def resolved(self) -> Random:
        """Itself when seeded, else a copy with a fresh random seed to record."""
        return self if self.seed is not None else dataclasses.replace(self, seed=_fresh_seed())


@dataclass(frozen=True)
class Grid:
    """Grid search: every point of the cartesian product of the ``grid`` dimensions, in
    ``itertools.product`` order (the first dimension varies slowest); the other dimensions are
    sampled for each config as :class:`Random` does (config i from (seed, i)).

    ``trials=None`` gives each point once; a multiple k of the number of points gives the
    product k times, repeat r of point p being config r * points + p, with its own samples.
    A space without grid dimensions has one point.
    """

    seed: int | None = None

    def __post_init__(self) -> None:
        _check_seed("Grid", self.seed)

    def count(self, space: Space, trials: int | None) -> int:
        """The number of points (trials=None) or ``trials`` when it is a multiple of it."""
        points = math.prod(len(dim.values) for _, dim in _axes(space))
        if trials is None:
            return points
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1 or trials % points:
            raise ValueError(
                f"grid search has {points} point{'s' if points > 1 else ''}: give trials=None to run "
                f"each once, or a multiple of {points} (e.g. {2 * points}) to repeat them; "
                f"got trials={trials!r}"
            )
        return trials

    def configs(self, space: Space, trials: int | None) -> list[Config]:
        """The product's configs, repeated as ``trials`` asks; without a seed, the other
        dimensions come from a fresh one each call (see ``resolved``)."""
        count = self.count(space, trials)
        if self.seed is None:
            return self.resolved().configs(space, count)
        found, axes = dimensions(space), _axes(space)
        configs: list[Config] = []
        while len(configs) < count:
            for point in itertools.product(*(dim.values for _, dim in axes)):
                rng = _trial_rng(self.seed, len(configs))
                values = dict(zip((path for path, _ in axes), point, strict=True))
                values.update((path, dim.sample(rng)) for path, dim in found if not isinstance(dim, grid))
                configs.append(build(space, values))
        return configs

    def resolved(self) -> Grid:
        """Itself when seeded, else a copy with a fresh random seed to record."""
        return self if self.seed is not None else dataclasses.replace(self, seed=_fresh_seed())


def _axes(space: Space) -> list[tuple[DimensionPath, grid]]:
    """The grid dimensions of a space, in :func:`dimensions` order."""
    return [(path, dim) for path, dim in dimensions(space) if isinstance(dim, grid)]

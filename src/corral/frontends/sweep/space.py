"""Search spaces for hyperparameter sweeps (the searches that turn them into trial configs
are in :mod:`.search`).

A *space* is a dict with str keys whose values are *dimensions*, nested dicts (recursively), or
constants (anything else, passed through as the very same object)::

    space = {"lr": loguniform(1e-5, 1e-1), "layers": integer(1, 4), "act": grid(["relu", "gelu"]),
             "data": {"path": "/scratch/x", "batch": choice([32, 64])}}

The dimensions, each checked when it is built (a bad bound is a ValueError before anything runs):

* ``uniform(low, high)``: a float in [low, high);
* ``loguniform(low, high)``: a float in [low, high) whose log is uniform; 0 < low;
* ``integer(low, high, log=False)``: an int in [low, high], **both ends included**; ``log=True``
  draws it log-uniformly (1 <= low);
* ``choice(values)``: one of the values, each as likely;
* ``grid(values)``: every value in turn under :class:`Grid` search; like ``choice`` under
  :class:`Random` search.

A search's ``configs(space, trials)`` returns the trial configs, each a new nested dict shaped
like the space with every dimension replaced by a value. ``Random`` samples every dimension;
``Grid`` takes the cartesian product of the grid dimensions (as ``itertools.product``) and
samples the others.

Reproducibility: trial ``i`` samples its dimensions, in :func:`dimensions` order, from its own
``random.Random(f"corral-sweep:{seed}:{i}")``. So a config depends only on (seed, i) and on the
space, never on the number of trials: the first 100 of 200 trials are the 100 trials of a run
with the same seed. A search built without a seed draws a fresh one for each ``configs`` call;
``resolved()`` fixes it first, so that the seed a sweep used can be recorded and given again.
"""

from __future__ import annotations

import json
import math
import numbers
import random
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

#: A search space: str keys to dimensions, nested spaces, or constants (see the module docstring).
Space: TypeAlias = dict[str, Any]
#: One trial's values: a space with every dimension replaced by a value.
Config: TypeAlias = dict[str, Any]
#: The keys that lead from the space to a dimension: ``("model", "lr")``.
DimensionPath: TypeAlias = tuple[str, ...]

#: The largest bound of ``integer(..., log=True)``: beyond it a float no longer holds every int.
MAX_LOG_INTEGER = 2**53


class Dimension(ABC):
    """A value to be chosen for each trial; what the searches replace in a space."""

    @abstractmethod
    def sample(self, rng: random.Random) -> Any:
        """One value, drawn with ``rng`` only (so that it is reproducible)."""

    @abstractmethod
    def describe(self) -> str:
        """How the user would write this dimension, e.g. ``loguniform(1e-05, 0.1)``."""

    def __repr__(self) -> str:
        return self.describe()


def _real(call: str, name: str, value: object) -> float:
    """``value`` as a finite float, or a ValueError naming the dimension's call."""
    # bool is an int to Python, but True as a bound is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{call}: {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{call}: {name} must be a finite number, got {value!r}")
    return number


def _bounds(call: str, low: object, high: object) -> tuple[float, float]:
    """The float bounds of a continuous dimension, low < high, both finite."""
    lo, hi = _real(call, "low", low), _real(call, "high", high)
    if not lo < hi:
        raise ValueError(f"{call}: low must be < high")
    return lo, hi


# The dimensions are classes named as users call them (``uniform(0, 1)``, like random.uniform):
# one name to write, to test with isinstance, and to read back in a repr.


@dataclass(frozen=True, repr=False)
class uniform(Dimension):
    """A float drawn uniformly from [low, high): low included, high never drawn."""

    low: float
    high: float

    def __post_init__(self) -> None:
        call = f"uniform(low={self.low!r}, high={self.high!r})"
        low, high = _bounds(call, self.low, self.high)
        if not math.isfinite(high - low):
            raise ValueError(f"{call}: high - low is too large for a float")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def sample(self, rng: random.Random) -> float:
        """A float in [low, high)."""
        while True:
            # low + span * u can round up to high; drawing again keeps high out.
            value = self.low + (self.high - self.low) * rng.random()
            if value < self.high:
                return value

    def describe(self) -> str:
        """E.g. ``uniform(0.0, 1.0)``."""
        return f"uniform({self.low!r}, {self.high!r})"


@dataclass(frozen=True, repr=False)
class loguniform(Dimension):
    """A float in [low, high) whose log is uniform in [log low, log high); needs 0 < low.

    Each decade is as likely as the next: for learning rates, weight decays, and the like.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        call = f"loguniform(low={self.low!r}, high={self.high!r})"
        low = _real(call, "low", self.low)
        if low <= 0:
            raise ValueError(f"{call}: low must be > 0")
        low, high = _bounds(call, self.low, self.high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def sample(self, rng: random.Random) -> float:
        """A float in [low, high), log-uniformly."""
        log_low, log_high = math.log(self.low), math.log(self.high)
        while True:
            # exp(log x) need not give x back exactly: drawing again keeps the bounds exact.
            value = math.exp(log_low + (log_high - log_low) * rng.random())
            if self.low <= value < self.high:
                return value

    def describe(self) -> str:
        """E.g. ``loguniform(1e-05, 0.1)``."""
        return f"loguniform({self.low!r}, {self.high!r})"


def _whole(call: str, name: str, value: object) -> int:
    """``value`` as an int, or a ValueError naming the dimension's call."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{call}: {name} must be a whole number (an int), got {value!r}")
    return int(value)


@dataclass(frozen=True, repr=False)
class integer(Dimension):
    """An int in [low, high], BOTH ENDS INCLUDED: ``integer(1, 6)`` is a die.

    ``log=True`` draws it log-uniformly (needs 1 <= low): value k comes with probability
    log((k+1)/k) / log((high+1)/low), so 1..9 is as likely as 10..99.
    """

    low: int
    high: int
    log: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        call = f"integer(low={self.low!r}, high={self.high!r}{', log=True' if self.log else ''})"
        low, high = _whole(call, "low", self.low), _whole(call, "high", self.high)
        if not isinstance(self.log, bool):
            raise ValueError(f"{call}: log must be True or False, got {self.log!r}")
        if not low < high:
            raise ValueError(f"{call}: low must be < high (for a single value, give it as a constant)")
        if self.log and low < 1:
            raise ValueError(f"{call}: low must be >= 1 with log=True")
        if self.log and high > MAX_LOG_INTEGER:
            raise ValueError(f"{call}: high must be <= 2**53 with log=True")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def sample(self, rng: random.Random) -> int:
        """An int in [low, high], both included."""
        if not self.log:
            return rng.randint(self.low, self.high)
        # floor of a log-uniform float in [low, high + 1): every int k gets its stretch [k, k+1).
        log_low, log_end = math.log(self.low), math.log(self.high + 1)
        value = math.floor(math.exp(log_low + (log_end - log_low) * rng.random()))
        return min(max(value, self.low), self.high)  # exp may round past either end

    def describe(self) -> str:
        """E.g. ``integer(1, 10)`` or ``integer(1, 1000, log=True)``."""
        return f"integer({self.low!r}, {self.high!r}{', log=True' if self.log else ''})"


def _values(call: str, values: object) -> tuple[Any, ...]:
    """The values of a discrete dimension as a tuple, or a ValueError naming the call."""
    # A str is a sequence of letters and a set has no order that survives a new process
    # (str hashes are salted): both would quietly break what the user meant or reproducibility.
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{call}: values must be a list or tuple, got {type(values).__name__}")
    if not values:
        raise ValueError(f"{call}: values must not be empty")
    return tuple(values)


def _show_values(values: tuple[Any, ...], shown: int = 5, width: int = 40) -> str:
    """A short list of the values: at most ``shown`` of them, each cut to ``width`` characters."""
    parts = [r if len(r := repr(v)) <= width else r[: width - 3] + "..." for v in values[:shown]]
    if len(values) > shown:
        parts.append(f"... {len(values)} values")
    return "[" + ", ".join(parts) + "]"


@dataclass(frozen=True, repr=False)
class choice(Dimension):
    """One of ``values`` (a non-empty list or tuple of any objects), each as likely.

    The chosen value is the very object given, not a copy.
    """

    values: Sequence[Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _values(f"choice({reprlib.repr(self.values)})", self.values))

    def sample(self, rng: random.Random) -> Any:
        """One of the values."""
        return rng.choice(self.values)

    def describe(self) -> str:
        """E.g. ``choice(['relu', 'gelu'])``."""
        return f"choice({_show_values(tuple(self.values))})"


@dataclass(frozen=True, repr=False)
class grid(Dimension):
    """Every one of ``values`` in turn under :class:`Grid` search (a cartesian axis); under
    :class:`Random` search, one of them drawn like :class:`choice`."""

    values: Sequence[Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _values(f"grid({reprlib.repr(self.values)})", self.values))

    def sample(self, rng: random.Random) -> Any:
        """One of the values, as ``choice`` would draw it."""
        return rng.choice(self.values)

    def describe(self) -> str:
        """E.g. ``grid([1, 2, 3])``."""
        return f"grid({_show_values(tuple(self.values))})"


def _where(path: Sequence[object]) -> str:
    """A path as the user would index it: ``space["model"]["lr"]``."""
    return "space" + "".join(
        f"[{json.dumps(k, ensure_ascii=False) if isinstance(k, str) else repr(k)}]" for k in path
    )


def check_space(space: object) -> None:
    """Raise TypeError for a space that is not a dict or has a key that is not a str, and
    ValueError for a dimension hidden in a list or tuple (it would never be sampled) or a
    space that contains itself; each message names the path, e.g. ``space["model"]["lr"]``."""
    if not isinstance(space, dict):
        raise TypeError(f"a search space must be a dict of names to dimensions, got {type(space).__name__}")
    _check_dict(space, (), frozenset())


def _check_dict(space: dict[Any, Any], path: tuple[object, ...], inside: frozenset[int]) -> None:
    inside = inside | {id(space)}
    for key, value in space.items():
        here = (*path, key)
        if not isinstance(key, str):
            raise TypeError(
                f"{_where(here)}: the keys of a search space must be str, got {type(key).__name__}"
            )
        if isinstance(value, dict):
            if id(value) in inside:
                raise ValueError(f"{_where(here)}: the space contains itself")
            _check_dict(value, here, inside)
        elif not isinstance(value, Dimension):
            _check_constant(value, here, inside)


def _check_constant(value: object, path: tuple[object, ...], inside: frozenset[int]) -> None:
    """A ValueError for a dimension inside a list or tuple: only dicts are searched into."""
    if isinstance(value, Dimension):
        raise ValueError(
            f"{_where(path)} is {value!r} inside a list or tuple, where it would never be sampled: "
            "give it its own key in a dict"
        )
    if isinstance(value, list | tuple | dict) and id(value) not in inside:
        items = value.values() if isinstance(value, dict) else value
        for index, item in enumerate(items):
            _check_constant(item, (*path, index), inside | {id(value)})


def dimensions(space: Space) -> list[tuple[DimensionPath, Dimension]]:
    """The dimensions of a (checked) space with their key paths, depth first in the dicts'
    insertion order: the order in which each trial samples them."""
    check_space(space)
    found: list[tuple[DimensionPath, Dimension]] = []

    def walk(node: dict[str, Any], path: DimensionPath) -> None:
        for key, value in node.items():
            if isinstance(value, Dimension):
                found.append(((*path, key), value))
            elif isinstance(value, dict):
                walk(value, (*path, key))

    walk(space, ())
    return found


def build(node: dict[str, Any], values: dict[DimensionPath, Any], path: DimensionPath = ()) -> Config:
    """A new dict shaped like ``node``: dimensions replaced by ``values``, dicts by new dicts,
    constants kept (the same objects)."""
    config: Config = {}
    for key, value in node.items():
        here = (*path, key)
        if isinstance(value, Dimension):
            config[key] = values[here]
        elif isinstance(value, dict):
            config[key] = build(value, values, here)
        else:
            config[key] = value
    return config


def to_json(value: object) -> object:
    """A JSON-able rendering of a config (or a space) for records people read, never to be
    loaded back as the values: dicts with str keys (others as their repr), lists and tuples as
    lists, int/float/str/bool/None as they are, but nan and infinities as "nan", "inf", "-inf"
    (which JSON has not); anything else, dimensions included, as its repr."""
    return _to_json(value, frozenset())


def _to_json(value: object, inside: frozenset[int]) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(float(value))  # 'nan', 'inf', '-inf'
    if isinstance(value, dict | list | tuple):
        if id(value) in inside:
            return "<cycle>"  # a list holding itself: its repr would be "[[...]]"
        inside = inside | {id(value)}
        if isinstance(value, dict):
            return {k if isinstance(k, str) else repr(k): _to_json(v, inside) for k, v in value.items()}
        return [_to_json(item, inside) for item in value]
    return repr(value)

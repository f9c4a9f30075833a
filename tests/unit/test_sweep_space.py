"""Sweep search spaces: dimensions draw from the distributions they name (checked with a
Kolmogorov-Smirnov test), bounds are checked when a dimension is built, grid search is the
cartesian product, and a config depends only on (seed, trial index)."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from corral.frontends.sweep.search import Grid, Random, Search
from corral.frontends.sweep.space import (
    Dimension,
    check_space,
    choice,
    dimensions,
    grid,
    integer,
    loguniform,
    to_json,
    uniform,
)

SPACE = {
    "lr": loguniform(1e-5, 1e-1),
    "layers": integer(1, 8),
    "model": {"act": choice(["relu", "gelu", "tanh"]), "dropout": uniform(0.0, 0.5), "width": 128},
}


def ks_pvalue(samples: Sequence[float], low: float, high: float) -> float:
    """The p-value of the one-sample Kolmogorov-Smirnov test of ``samples`` against the uniform
    distribution on [low, high): asymptotic Kolmogorov distribution, Stephens' correction."""
    n = len(samples)
    cdf = [min(max((x - low) / (high - low), 0.0), 1.0) for x in sorted(samples)]
    d = max(max((i + 1) / n - f, f - i / n) for i, f in enumerate(cdf))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:  # the series converges badly here, and its value is 1 to many digits
        return 1.0
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(max(p, 0.0), 1.0)


def draws(dimension: Dimension, n: int = 2000, seed: int = 7) -> list[Any]:
    """``n`` values of one dimension through a seeded random search."""
    return [config["x"] for config in Random(seed).configs({"x": dimension}, n)]


def test_the_ks_helper_tells_uniform_from_not() -> None:
    rng = random.Random(1)
    assert ks_pvalue([rng.random() for _ in range(2000)], 0, 1) > 0.01
    assert ks_pvalue([rng.random() ** 2 for _ in range(2000)], 0, 1) < 0.01
    assert ks_pvalue([0.5] * 10, 0, 1) < 0.5


def test_loguniform_is_uniform_in_log_space() -> None:
    values = draws(loguniform(1e-5, 1e-1))
    assert all(1e-5 <= v < 1e-1 for v in values)
    assert ks_pvalue([math.log(v) for v in values], math.log(1e-5), math.log(1e-1)) > 0.01
    # The same test can fail: the raw values crowd near low, far from uniform on [low, high).
    assert ks_pvalue(values, 1e-5, 1e-1) < 0.01


def test_uniform_is_uniform() -> None:
    values = draws(uniform(-2, 3))
    assert all(-2 <= v < 3 for v in values)
    assert ks_pvalue(values, -2, 3) > 0.01
    assert ks_pvalue(values, -2, 4) < 0.01  # the wrong range is told apart


def test_integer_includes_both_ends_and_nothing_outside() -> None:
    assert set(draws(integer(3, 9))) == set(range(3, 10))
    assert set(draws(integer(-2, 2))) == {-2, -1, 0, 1, 2}


def test_log_integer_stays_in_range_and_favours_small_values() -> None:
    counts = Counter(draws(integer(1, 8, log=True), n=5000))
    assert set(counts) == set(range(1, 9))
    assert counts[1] > 2 * counts[8]  # log(2/1) against log(9/8): about 5.9 times as likely
    wide = draws(integer(10, 100_000, log=True))
    assert all(10 <= v <= 100_000 for v in wide) and all(isinstance(v, int) for v in wide)
    assert sum(v < 1000 for v in wide) > 0.3 * len(wide)  # 2 of 4 decades: about half


def test_choice_takes_any_objects_about_equally_often() -> None:
    def function() -> None: ...

    marker = object()
    values = [function, None, "a", marker]
    counts = Counter(next(i for i, v in enumerate(values) if v is x) for x in draws(choice(values), n=4000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(850 < c < 1150 for c in counts.values()), counts  # 1000 each, sd about 27


def test_grid_under_random_search_draws_like_choice() -> None:
    assert set(draws(grid(["a", "b", "c"]), n=300)) == {"a", "b", "c"}


def test_the_same_seed_gives_the_same_configs_and_another_seed_others() -> None:
    assert Random(1).configs(SPACE, 20) == Random(1).configs(SPACE, 20)
    assert Random(1).configs(SPACE, 20) != Random(2).configs(SPACE, 20)
    assert len({config["lr"] for config in Random(3).configs(SPACE, 20)}) == 20  # each trial its own


def test_configs_are_prefix_stable() -> None:
    assert Random(5).configs(SPACE, 200)[:100] == Random(5).configs(SPACE, 100)
    space = {"a": grid([1, 2]), "lr": uniform(0, 1)}
    assert Grid(5).configs(space, 6)[:2] == Grid(5).configs(space, None)


def test_an_unseeded_search_resolves_to_a_fresh_seed_and_a_seeded_one_to_itself() -> None:
    seeded = Random(9)
    assert seeded.resolved() is seeded
    resolved = Random().resolved()
    assert isinstance(resolved.seed, int) and 0 <= resolved.seed < 2**31
    assert resolved.configs(SPACE, 5) == Random(resolved.seed).configs(SPACE, 5)
    assert Random().resolved().seed != Random().resolved().seed  # 1 chance in 2**31 to fail
    assert isinstance(Grid().resolved().seed, int)
    assert len(Random().configs(SPACE, 3)) == 3  # usable without resolving first


@pytest.mark.parametrize(("search", "trials"), [(Random(), 4), (Grid(), None), (Grid(), 6)])
def test_count_says_how_many_configs_a_resolved_search_gives(search: Search, trials: int | None) -> None:
    space = {"a": grid([1, 2, 3]), "lr": uniform(0, 1)}
    resolved = search.resolved()
    configs = resolved.configs(space, trials)
    assert len(configs) == search.count(space, trials) == resolved.count(space, trials)
    assert configs == resolved.configs(space, trials)


GRID_SPACE = {
    "a": grid([1, 2]),
    "nested": {"b": grid(["x", "y", "z"]), "lr": loguniform(1e-4, 1e-2)},
    "c": grid([0.1, 0.2, 0.3, 0.4]),
    "seed": integer(0, 10**9),
}


def points(configs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["a"], c["nested"]["b"], c["c"]) for c in configs]


def test_grid_search_is_the_cartesian_product_in_order() -> None:
    product = list(itertools.product([1, 2], ["x", "y", "z"], [0.1, 0.2, 0.3, 0.4]))
    configs = Grid(0).configs(GRID_SPACE, None)
    assert len(configs) == 24 == Grid(0).count(GRID_SPACE, None)
    assert set(points(configs)) == set(product)
    assert points(configs) == product


def test_grid_search_repeats_the_product_with_fresh_samples() -> None:
    configs = Grid(0).configs(GRID_SPACE, 48)
    assert len(configs) == 48 == Grid(0).count(GRID_SPACE, 48)
    assert points(configs[:24]) == points(configs[24:])
    assert all(a["seed"] != b["seed"] for a, b in zip(configs[:24], configs[24:], strict=True))


@pytest.mark.parametrize("trials", [30, 0, 12, -24])
def test_grid_search_refuses_a_trial_count_that_is_not_a_multiple(trials: int) -> None:
    with pytest.raises(ValueError, match=r"24 points.*trials=None.*multiple of 24"):
        Grid(0).configs(GRID_SPACE, trials)
    with pytest.raises(ValueError, match="24"):
        Grid(0).count(GRID_SPACE, trials)


def test_random_dimensions_in_a_grid_vary_by_point_and_are_reproducible() -> None:
    configs = Grid(4).configs(GRID_SPACE, None)
    assert len({c["nested"]["lr"] for c in configs}) == 24
    assert len({c["seed"] for c in configs}) == 24
    assert configs == Grid(4).configs(GRID_SPACE, None)
    assert configs != Grid(5).configs(GRID_SPACE, None)


def test_a_space_without_grid_dimensions_has_one_point() -> None:
    assert Grid(1).count(SPACE, None) == 1
    configs = Grid(1).configs(SPACE, 3)
    assert len(configs) == 3 and len({c["lr"] for c in configs}) == 3
    assert Grid(1).configs({"k": 1}, None) == [{"k": 1}]


def test_nested_spaces_keep_their_shape_and_constants_are_the_same_objects() -> None:
    table = [1, 2, 3]
    space = {"model": {"opt": {"lr": uniform(0, 1), "betas": (0.9, 0.99)}, "act": "relu"}, "data": table}
    before = copy.deepcopy(space)
    config = Random(2).configs(space, 1)[0]
    assert config.keys() == space.keys() and config["model"].keys() == space["model"].keys()
    assert isinstance(config["model"]["opt"]["lr"], float)
    assert config["data"] is table and config["model"]["opt"]["betas"] is space["model"]["opt"]["betas"]
    assert config["model"] is not space["model"] and config["model"]["opt"] is not space["model"]["opt"]
    assert space == before  # dimensions compare by value: the space still holds them, unchanged
    assert isinstance(space["model"]["opt"]["lr"], uniform)


def test_dimensions_are_listed_depth_first_in_insertion_order() -> None:
    assert [path for path, _ in dimensions(SPACE)] == [
        ("lr",),
        ("layers",),
        ("model", "act"),
        ("model", "dropout"),
    ]
    assert dimensions({"z": {"y": grid([1])}, "a": uniform(0, 1)})[0] == (("z", "y"), grid([1]))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: uniform(math.nan, 1), r"uniform\(low=nan, high=1\): low must be a finite"),
        (lambda: uniform(0, math.inf), "high must be a finite number, got inf"),
        (lambda: uniform(True, 2), "low must be a number, got True"),
        (lambda: uniform("0", 1), "low must be a number, got '0'"),
        (lambda: uniform(1, 1), r"uniform\(low=1, high=1\): low must be < high"),
        (lambda: uniform(2, 1), "low must be < high"),
        (lambda: uniform(-1e308, 1e308), "too large"),
        (lambda: loguniform(0, 1), r"^loguniform\(low=0, high=1\): low must be > 0$"),
        (lambda: loguniform(-1, 1), "low=-1"),
        (lambda: loguniform(1, -math.inf), "got -inf"),
        (lambda: loguniform(0.1, 0.01), "low must be < high"),
        (lambda: integer(1.5, 3), "low must be a whole number .*got 1.5"),
        (lambda: integer(0, False), "high must be a whole number .*got False"),
        (lambda: integer(5, 5), r"integer\(low=5, high=5\): low must be < high"),
        (lambda: integer(0, 10, log=True), "low must be >= 1 with log=True"),
        (lambda: integer(1, 10, log="yes"), "log must be True or False, got 'yes'"),
        (lambda: choice([]), r"choice\(\[\]\): values must not be empty"),
        (lambda: grid(()), r"grid\(\(\)\): values must not be empty"),
        (lambda: choice("abc"), "choice\\('abc'\\): values must be a list or tuple, got str"),
        (lambda: grid({1, 2}), r"grid\(\{1, 2\}\).*got set"),
        (lambda: Random(seed="1"), r"Random\(seed='1'\): seed must be an int"),
        (lambda: Grid(seed=1.0), r"Grid\(seed=1.0\)"),
    ],
)
def test_bad_dimensions_and_searches_are_refused_when_built(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("trials", [None, 0, -1, 2.0, True])
def test_random_search_needs_a_positive_whole_number_of_trials(trials: Any) -> None:
    with pytest.raises(ValueError, match=f"trials={trials!r}"):
        Random(1).configs(SPACE, trials)


def test_bad_spaces_are_refused_naming_the_path() -> None:
    with pytest.raises(TypeError, match="must be a dict.*got list"):
        check_space([uniform(0, 1)])
    with pytest.raises(TypeError, match=r'space\["model"\]\[1\]: the keys .* must be str'):
        check_space({"model": {1: uniform(0, 1)}})
    with pytest.raises(
        ValueError, match=r'space\["model"\]\["lrs"\]\[1\] is uniform\(0.0, 1.0\) inside a list'
    ):
        Random(1).configs({"model": {"lrs": [0.1, uniform(0, 1)]}}, 1)
    looped: dict[str, Any] = {"a": 1}
    looped["self"] = looped
    with pytest.raises(ValueError, match=r'space\["self"\]: the space contains itself'):
        check_space(looped)
    check_space({"fine": {"deep": [1, [2, {"x": 3}]], "d": grid([1])}})


def test_dimensions_describe_themselves_as_written() -> None:
    assert repr(loguniform(1e-5, 1e-1)) == "loguniform(1e-05, 0.1)" == loguniform(1e-5, 0.1).describe()
    assert repr(uniform(0, 1)) == "uniform(0.0, 1.0)"
    assert repr(integer(1, 1000, log=True)) == "integer(1, 1000, log=True)"
    assert repr(choice(["relu", "gelu"])) == "choice(['relu', 'gelu'])"
    assert repr(grid(range(100))).startswith("grid([0, 1, 2, 3, 4, ... 100 values")


def test_to_json_renders_configs_for_people_to_read() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "Thing()"

    config = {
        "lr": 0.1,
        "bad": math.nan,
        "big": (1, [math.inf, -math.inf]),
        "model": {"obj": Thing(), 3: None, "on": True, "name": "x"},
        "dim": loguniform(1e-5, 1e-1),
    }
    rendered = to_json(config)
    assert rendered == {
        "lr": 0.1,
        "bad": "nan",
        "big": [1, ["inf", "-inf"]],
        "model": {"obj": "Thing()", "3": None, "on": True, "name": "x"},
        "dim": "loguniform(1e-05, 0.1)",
    }
    json.dumps(rendered, allow_nan=False)  # strict JSON: no NaN or Infinity left
    assert config["big"] == (1, [math.inf, -math.inf])  # the config is left as it was

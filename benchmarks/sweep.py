"""corral.sweep with ASHA against its baselines, measured in the same run, as ratios.

    python -m benchmarks.sweep efficiency --backend slurm   # ASHA vs the same sweep without it
    python -m benchmarks.sweep noise --seeds 10             # noisy curves, local; with Optuna
    python -m benchmarks.sweep optuna --seeds 3             # the noise run, Optuna required
    python -m benchmarks.sweep overhead --backend local     # 1000 no-op trials vs Executor.map
    python -m benchmarks.sweep all                          # each of them, SLURM where it applies

The objective is synthetic, with a ranking known in advance: each config has a final quality
q(config), a smooth function of log10(lr), depth and dropout, and its learning curve is
loss(epoch) = q + A * epoch**-B, the same A and B for all, so the ranking is the same at every
epoch. Each epoch sleeps --epoch-seconds, so that wall times mean something. The noisy variant
adds gaussian noise to each epoch's loss, from an rng seeded by (seed, config, epoch), so that
corral and Optuna see the very same numbers. "The best full-budget trial" is the config with the
lowest true loss at max_t (computed, no run); a winner's gap is the relative excess of its true
final loss over that one's. SLURM needs the test cluster (``bash scripts/test-cluster.sh start``).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corral  # noqa: E402
from corral import sweep  # noqa: E402

A, B = 1.0, 0.5  # the learning curve: q + A * epoch**-B
SPACE: dict[str, Any] = {
    "lr": sweep.loguniform(1e-5, 1.0),
    "depth": sweep.integer(1, 8),
    "dropout": sweep.uniform(0.0, 0.5),
}
Config = dict[str, Any]


def quality(config: Config) -> float:
    """The final quality: best near lr=3e-3, depth 5, dropout 0.1; a bowl in each dimension."""
    lr, depth, dropout = float(config["lr"]), int(config["depth"]), float(config["dropout"])
    return 0.05 + 0.04 * (math.log10(lr) + 2.5) ** 2 + 0.01 * (depth - 5) ** 2 + 0.4 * (dropout - 0.1) ** 2


def true_loss(config: Config, epoch: int) -> float:
    return quality(config) + A * math.pow(epoch, -B)


@dataclass(frozen=True)
class Curves:
    """The train function: ``max_t`` epochs of the curve, each logged (noise 0: none)."""

    max_t: int
    epoch_seconds: float
    noise: float = 0.0
    seed: int = 0

    def loss(self, config: Config, epoch: int) -> float:
        loss = true_loss(config, epoch)
        if self.noise:
            loss += random.Random(f"{self.seed}:{config['lr']!r}:{epoch}").gauss(0.0, self.noise)
        return loss

    def __call__(self, config: Config) -> float:
        loss = math.nan
        for epoch in range(1, self.max_t + 1):
            time.sleep(self.epoch_seconds)
            loss = self.loss(config, epoch)
            sweep.log(epoch, loss=loss)  # raises sweep.Pruned: let it go
        return loss


def noop(config: Config) -> int:
    for step in range(1, 11):
        sweep.log(step, loss=0.0)  # all tie: none is pruned, every trial makes its 10 calls
    return int(config["i"])


@dataclass
class Run:
    """What one sweep gave: its winner, the epochs all its trials ran, its wall time."""

    winner: Config
    epochs: int
    seconds: float
    steps: dict[int, int]  # trial -> last epoch


#: Every sweep's and map's folder is made under this one, removed at the end of the run.
SCRATCH = tempfile.mkdtemp(prefix="corral-sweep-bench-")


def scratch() -> str:
    return tempfile.mkdtemp(dir=SCRATCH)


def run_corral(args: argparse.Namespace, backend: str, curves: Curves, seed: int, asha: bool) -> Run:
    scheduler = sweep.ASHA(min_t=1, max_t=curves.max_t, eta=args.eta) if asha else None
    start = time.monotonic()
    result = sweep.Sweep(
        curves, SPACE, metric="loss", mode="min", trials=args.trials, search=sweep.Random(seed),
        scheduler=scheduler, max_running=args.running, name=f"curves-{seed}", overwrite=True,
        progress=False, backend=backend, directory=scratch(),
    ).run()  # fmt: skip
    seconds = time.monotonic() - start
    bad = [t for t in result.trials if t.status not in ("completed", "pruned")]
    if bad:
        raise SystemExit(f"{len(bad)} trials did not end well, e.g. {bad[0].status}: {bad[0].error!r}")
    steps = {t.trial: int(t.step or 0) for t in result.trials}
    return Run(result.best().config, sum(steps.values()), seconds, steps)


def configs_of(args: argparse.Namespace, seed: int) -> list[Config]:
    """The configs a corral sweep of this seed runs, in trial order."""
    return sweep.Random(seed).configs(SPACE, args.trials)


def run_optuna(args: argparse.Namespace, curves: Curves, configs: list[Config]) -> Run:
    """Optuna in-process, the same configs enqueued in the same order, its SuccessiveHalving
    pruner with the same min_resource and reduction factor, ``running`` threads at once."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=args.eta)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for config in configs:
        study.enqueue_trial(config)

    def objective(trial: optuna.Trial) -> float:
        config = {
            "lr": trial.suggest_float("lr", 1e-5, 1.0, log=True),
            "depth": trial.suggest_int("depth", 1, 8),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }
        loss = math.nan
        for epoch in range(1, curves.max_t + 1):
            time.sleep(curves.epoch_seconds)
            loss = curves.loss(config, epoch)
            trial.report(loss, epoch)
            if epoch < curves.max_t and trial.should_prune():  # corral never prunes at max_t
                raise optuna.TrialPruned()
        return loss

    start = time.monotonic()
    study.optimize(objective, n_trials=len(configs), n_jobs=args.running)
    seconds = time.monotonic() - start
    steps = {t.number: t.last_step or 0 for t in study.trials}
    return Run(dict(study.best_trial.params), sum(steps.values()), seconds, steps)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def check(ok: bool, *lines: str) -> bool:
    """Print the verdict and what it is about (further lines indented under it)."""
    print(f"{verdict(ok)}  " + "\n      ".join(lines))
    return ok


def efficiency(args: argparse.Namespace, backend: str) -> bool:
    """ASHA on noiseless curves against the same sweep without a scheduler."""
    curves = Curves(args.max_t, args.epoch_seconds)
    configs = configs_of(args, args.seed)
    best = min(range(len(configs)), key=lambda t: quality(configs[t]))
    budget = args.trials * args.max_t
    print(
        f"\n== efficiency: {args.trials} trials, max_t={args.max_t}, eta={args.eta}, {args.running} at once,"
    )
    print(
        f"   {args.epoch_seconds} s per epoch, backend {backend}, seed {args.seed}: the best is trial {best}"
    )
    asha = run_corral(args, backend, curves, args.seed, asha=True)
    full = run_corral(args, backend, curves, args.seed, asha=False)
    share, ratio = asha.epochs / budget, asha.seconds / full.seconds
    print(f"{'':<8} {'ASHA':>9} {'no ASHA':>9} {'ratio':>7}")
    print(f"{'epochs':<8} {asha.epochs:>9} {full.epochs:>9} {share:>7.3f}")
    print(f"{'wall s':<8} {asha.seconds:>9.2f} {full.seconds:>9.2f} {ratio:>7.3f}")
    ideal = budget * args.epoch_seconds / args.running
    print(f"(no ASHA's floor: {budget} epochs x {args.epoch_seconds} s / {args.running} = {ideal:.2f} s)")
    won = asha.winner == configs[best]
    return all(
        [
            check(asha.steps[best] == args.max_t and won, f"the best config ran to step {asha.steps[best]}"
                  f" (max_t {args.max_t}) and {'won' if won else 'did not win'}"),
            check(share <= 0.20, f"epochs {asha.epochs} / {budget} = {share:.1%} of the budget (<= 20 %)"),
            check(ratio <= 0.30, f"wall {asha.seconds:.2f} s / {full.seconds:.2f} s = {ratio:.1%} (<= 30 %)"),
        ]
    )  # fmt: skip


def gap(config: Config, best: Config, max_t: int) -> float:
    return true_loss(config, max_t) / true_loss(best, max_t) - 1


def noise(args: argparse.Namespace, with_optuna: bool) -> bool:
    """ASHA on noisy curves, one sweep per seed, on the local backend; Optuna beside it."""
    print(f"\n== noise: {args.trials} trials, max_t={args.max_t}, eta={args.eta}, {args.running} at once,")
    print(f"   noise sd {args.noise} on each epoch's loss, {args.epoch_seconds} s per epoch, local backend")
    print("   best: the best config's true final loss; full: the gap of the winner when all trials run")
    print("   to max_t, same noise (computed); then each contender's winner's true final loss, its gap")
    print("   to the best, the epochs all its trials ran, and where the best config stopped (best@)")
    head = f"{'seed':>4} {'best':>7} {'full %':>6} | {'corral':>7} {'gap %':>6} {'epochs':>6} {'best@':>5}"
    head += f" | {'optuna':>7} {'gap %':>6} {'epochs':>6} {'best@':>5}" if with_optuna else ""
    print(head)
    print("-" * len(head))
    gaps: dict[str, list[float]] = {"corral": [], "optuna": []}
    runs: dict[str, list[Run]] = {"corral": [], "optuna": []}
    for seed in range(args.seed, args.seed + args.seeds):
        curves = Curves(args.max_t, args.epoch_seconds, args.noise, seed)
        configs = configs_of(args, seed)
        best = min(range(len(configs)), key=lambda t: quality(configs[t]))
        full = min(configs, key=lambda c: curves.loss(c, args.max_t))
        line = f"{seed:>4} {true_loss(configs[best], args.max_t):>7.4f}"
        line += f" {100 * gap(full, configs[best], args.max_t):>6.2f}"
        found = {"corral": run_corral(args, "local", curves, seed, asha=True)}
        if with_optuna:
            found["optuna"] = run_optuna(args, curves, configs)
        for name, got in found.items():
            gaps[name].append(gap(got.winner, configs[best], args.max_t))
            runs[name].append(got)
            line += f" | {true_loss(got.winner, args.max_t):>7.4f} {100 * gaps[name][-1]:>6.2f}"
            line += f" {got.epochs:>6} {got.steps[best]:>5}"
        print(line, flush=True)
    within = {name: sum(g <= 0.02 for g in values) for name, values in gaps.items()}
    need = math.ceil(0.9 * args.seeds)
    ok = check(
        within["corral"] >= need, f"corral's winner within 2 % of the best in {within['corral']} of"
        f" {args.seeds} seeds (>= {need}); mean gap {100 * statistics.mean(gaps['corral']):.2f} %",
    )  # fmt: skip
    if not with_optuna:
        return ok
    mean_gap = {name: statistics.mean(values) for name, values in gaps.items()}
    epochs = {name: statistics.mean(r.epochs for r in values) for name, values in runs.items()}
    wall = {name: statistics.mean(r.seconds for r in values) for name, values in runs.items()}
    spent = epochs["corral"] / epochs["optuna"]
    return all(
        [
            ok,
            check(
                mean_gap["corral"] <= mean_gap["optuna"] + 0.002 and within["corral"] >= within["optuna"],
                f"best values as good as Optuna's: mean gap {100 * mean_gap['corral']:.2f} % vs"
                f" {100 * mean_gap['optuna']:.2f} %, within 2 % in {within['corral']} vs {within['optuna']}",
            ),
            check(
                spent <= 1.05,
                f"epochs no more than Optuna's: {epochs['corral']:.0f} vs {epochs['optuna']:.0f} (mean),"
                f" ratio {spent:.2f} (<= 1.05); budget {args.trials * args.max_t}",
                f"(mean wall: corral {wall['corral']:.1f} s in processes,"
                f" Optuna {wall['optuna']:.1f} s in threads)",
            ),
        ]
    )


def overhead(args: argparse.Namespace, backend: str) -> bool:
    """N no-op trials of 10 log() each: a sweep (with ASHA, and without) against Executor.map."""
    configs = [{"i": i} for i in range(args.noop_trials)]
    space = {"i": sweep.grid(list(range(args.noop_trials)))}

    def by_sweep(scheduler: sweep.ASHA | None) -> Callable[[], float]:
        def run() -> float:
            start = time.monotonic()
            result = sweep.Sweep(
                noop, space, metric="loss", scheduler=scheduler, max_running=args.running, name="noop",
                progress=False, backend=backend, directory=scratch(),
            ).run()  # fmt: skip
            assert [t.value for t in result.trials] == list(range(args.noop_trials))
            return time.monotonic() - start

        return run

    def by_map() -> float:
        start = time.monotonic()
        with corral.Executor(backend, directory=scratch(), max_running=args.running) as executor:
            assert list(executor.map(noop, configs)) == list(range(args.noop_trials))
        return time.monotonic() - start

    runs = {"map": by_map, "asha": by_sweep(sweep.ASHA(1, 10, 3)), "plain": by_sweep(None)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):  # the contenders alternate, so that drift hits them alike
        for name, run in runs.items():
            times[name].append(run())
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n== overhead: {args.noop_trials} no-op trials x 10 log(), {args.running} running, backend")
    print(f"   {backend}, median of {args.repeat}; baseline: Executor.map of the same calls")
    ok = True
    for name, label in (("asha", "sweep, ASHA(1, 10, 3)"), ("plain", "sweep, no scheduler")):
        ratio = median[name] / median["map"]
        ok = ok and ratio <= 1.5
        print(f"{verdict(ratio <= 1.5)}  {label:<22} {median[name]:>7.2f} s   Executor.map", end=" ")
        print(f"{median['map']:>7.2f} s   ratio {ratio:.2f} (target <= 1.5)")
    return ok


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("efficiency", "noise", "optuna", "overhead", "all"))
    parser.add_argument("--backend", choices=("local", "slurm"), help="default: slurm, noise: local")
    parser.add_argument("--trials", type=int, default=81)
    parser.add_argument("--max-t", type=int, default=81)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--running", type=int, default=8, help="trials at once (max_running)")
    parser.add_argument("--epoch-seconds", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=10, help="noise: how many seeds")
    parser.add_argument("--noise", type=float, default=0.002, help="sd of the noise on each epoch's loss")
    parser.add_argument("--noop-trials", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="overhead: runs per figure (median)")
    parser.add_argument("--no-optuna", action="store_true", help="noise: without Optuna beside it")
    args = parser.parse_args(argv)
    # The local backend runs at most as many processes as CPUs; the trials mostly sleep.
    os.environ.setdefault("CORRAL_LOCAL_SLOTS", str(args.running))
    print(f"corral {corral.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs here")
    backend = args.backend or "slurm"
    ok = True
    try:
        if args.what in ("efficiency", "all"):
            ok = efficiency(args, backend) and ok
        if args.what in ("noise", "optuna", "all"):
            has_optuna = importlib.util.find_spec("optuna") is not None and not args.no_optuna
            ok = noise(args, with_optuna=args.what == "optuna" or has_optuna) and ok
        if args.what in ("overhead", "all"):
            for one in (args.backend,) if args.backend else ("local", "slurm"):
                ok = overhead(args, one) and ok
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    print(f"\n{verdict(ok)} overall")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

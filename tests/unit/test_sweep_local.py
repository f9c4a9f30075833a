"""Sweeps on the local backend: ASHA prunes where the trials run, crashes are failures with
their traceback, retried trials keep what they logged, resume and overwrite, the results.
(The real SLURM cluster: tests/slurm/test_sweep_slurm.py.)"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corral
from corral import sweep
from corral.store.rungs import Rungs

ROOT = Path(__file__).resolve().parents[2]
#: Trial configs in an order where the best (q=0) is neither first nor last.
QS = [0.5, 0.3, 0.9, 0.7, 0.0, 0.8, 0.2, 0.6, 0.4]
MAX_T = 27


@pytest.fixture(autouse=True)
def local(workdir: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CORRAL_OUTCOME_GRACE", "1")
    corral.set_defaults(backend="local", directory=workdir)
    return workdir


def curve(config: dict[str, float]) -> float:
    """A learning curve whose ranking is known: lower q is better at every epoch."""
    loss = 0.0
    for epoch in range(1, MAX_T + 1):
        loss = config["q"] + 1.0 / epoch
        sweep.log(epoch, loss=loss)
    return loss


def crash_on_odd(config: dict[str, int]) -> int:
    sweep.log(1, loss=-float(config["x"]))  # better and better: none is pruned
    if config["x"] % 2:
        raise KeyError(f"odd {config['x']}")
    return config["x"]


def always_crash(config: dict[str, int]) -> None:
    raise ZeroDivisionError("nothing works")


def flaky_first_attempt(config: dict[str, object]) -> float:
    """Logs three steps, then dies of an OSError on its first attempt only."""
    marker = Path(str(config["marks"]), f"{sweep.current_trial()}")
    for epoch in (1, 2, 3):
        sweep.log(epoch, loss=1.0 / epoch)
    if not marker.exists():
        marker.write_text("")
        raise OSError("the file system hiccupped")
    sweep.log(4, loss=0.2)
    return 0.2


def events(folder: str, trial: int) -> list[dict[str, object]]:
    lines = Path(folder, "trials", f"{trial}.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def asha_sweep(**options: object) -> sweep.Sweep:
    space = {"q": sweep.grid(QS), "fixed": {"depth": 3}}
    return sweep.Sweep(
        curve, space, metric="loss", mode="min", max_running=2, progress=False,
        scheduler=sweep.ASHA(min_t=1, max_t=MAX_T, eta=3), **options,  # type: ignore[arg-type]
    )  # fmt: skip


def test_asha_prunes_on_the_nodes_and_the_best_runs_to_max_t(workdir: str) -> None:
    s = asha_sweep(name="curves")
    result = s.run()
    by_q = {t.config["q"]: t for t in result.trials}
    best = result.best()
    assert best.config["q"] == 0.0 and best.status == "completed" and best.step == MAX_T
    assert best.value == pytest.approx(1.0 / MAX_T)
    assert by_q[0.9].status == "pruned"  # worse than trials before it at a rung
    statuses = {t.status for t in result.trials}
    assert statuses <= {"completed", "pruned"} and "pruned" in statuses
    epochs = sum(t.step or 0 for t in result.trials)
    assert epochs < len(QS) * MAX_T * 0.8
    assert all(t.config["fixed"] == {"depth": 3} for t in result.trials)
    # Every decision is in a rung record made once per trial and milestone, and agrees with
    # the cutoff it was given and the records there before it.
    rungs = Rungs(os.path.join(s.path, "rungs"))
    for milestone in rungs.milestones():
        records = rungs.records(milestone)
        for trial, record in records.items():
            kept = record.cutoff is None or record.value <= record.cutoff  # type: ignore[operator]
            assert record.keep is kept and record.earlier < len(records), (trial, record)
    for trial in result.trials:
        ends = [e for e in events(s.path, trial.trial) if e["e"] == "end"]
        assert [e["status"] for e in ends] == [trial.status]
        if trial.status == "pruned":
            assert trial.milestone is not None and rungs.records(trial.milestone)[trial.trial].keep is False


def test_a_crash_is_a_failure_with_its_own_exception_never_pruned(workdir: str) -> None:
    result = sweep.Sweep(
        crash_on_odd, {"x": sweep.grid([0, 1, 2, 3])}, metric="loss", progress=False,
        scheduler=sweep.ASHA(min_t=1, max_t=9), name="crashes",
    ).run()  # fmt: skip
    assert [t.status for t in result.trials] == ["completed", "failed", "completed", "failed"]
    error = result.trials[1].error
    assert isinstance(error, KeyError) and "odd 1" in str(error)
    assert "crash_on_odd" in str(error.__cause__)  # the traceback from where it ran
    assert result.trials[1].metrics == {"loss": -1.0}
    assert "failed" in result.summary() and "2 failed" in result.summary()


def test_every_trial_failing_raises_the_first_failure(workdir: str) -> None:
    s = sweep.Sweep(always_crash, {"x": sweep.grid([1, 2])}, metric="loss", progress=False)
    with pytest.raises(ZeroDivisionError, match="nothing works"):
        s.run()


def test_a_retried_trial_keeps_what_it_logged_before(workdir: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    s = sweep.Sweep(
        flaky_first_attempt, {"marks": str(marks), "k": sweep.grid([1, 2])}, metric="loss",
        scheduler=sweep.ASHA(min_t=1, max_t=9), retry_on=OSError, max_retries=1, progress=False,
    )  # fmt: skip
    result = s.run()
    for trial in result.trials:
        assert trial.status == "completed" and trial.attempts == 2 and trial.value == 0.2
        assert [(e.attempt, e.step) for e in trial.history] == [
            (0, 1),
            (0, 2),
            (0, 3),
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
        ]
    rungs = Rungs(os.path.join(s.path, "rungs"))
    assert sorted(rungs.milestones()) == [1, 3]
    for milestone in (1, 3):  # the second attempt reported again: same records, none doubled
        records = rungs.records(milestone)
        assert sorted(records) == [0, 1] and {r.attempt for r in records.values()} == {0}
        assert len(os.listdir(os.path.join(s.path, "rungs", str(milestone)))) == 2


def test_running_it_again_resumes_and_runs_nothing_twice(workdir: str) -> None:
    first = asha_sweep(name="again").run()
    second_sweep = asha_sweep(name="again")
    second = second_sweep.run()
    assert [(t.status, t.step, t.value) for t in second.trials] == [
        (t.status, t.step, t.value) for t in first.trials
    ]
    manifest = json.loads(Path(second_sweep.path, "sweep.json").read_text())
    assert len(manifest["batches"]) == 1  # nothing submitted the second time
    for trial in second.trials:
        assert [e["e"] for e in events(second_sweep.path, trial.trial)].count("start") == 1
    attached = sweep.attach("again", progress=False)
    assert [t.status for t in attached.trials] == [t.status for t in first.trials]
    assert attached.best().trial == first.best().trial


CUT = """
import signal, sys, time
from corral import sweep

signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the test runner ignores

def train(config):
    for epoch in range(1, 4):
        time.sleep(config["pause"])
        sweep.log(epoch, loss=config["q"] + 1.0 / epoch)
    return config["q"]

try:
    sweep.Sweep(
        train, {"q": sweep.grid([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), "pause": float(sys.argv[1])},
        metric="loss", max_running=2, name="cut", backend="local", progress=False,
    ).run()
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_sweep_stopped_by_ctrl_c_resumes_what_it_left(workdir: str, tmp_path: Path) -> None:
    script = tmp_path / "cut.py"
    script.write_text(CUT)
    env = {**os.environ, "CORRAL_DIR": workdir, "PYTHONPATH": str(ROOT / "src")}
    driver = subprocess.Popen([sys.executable, str(script), "0.4"], cwd=tmp_path, env=env)
    folder = Path(workdir, "sweeps", "cut")
    try:
        deadline = time.monotonic() + 60
        while not (folder / "trials" / "2.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # two trials ended, the next two run
    finally:
        driver.send_signal(signal.SIGINT)
    assert driver.wait(60) == 130
    before = {
        t: [e["e"] for e in events(str(folder), t)]
        for t in range(6)
        if (folder / "trials" / f"{t}.log").exists()
    }
    assert before[0][-1] == "end" and "end" not in before[2]  # one finished, one cut short
    # The same sweep, run again (quick now: the pause is a constant of its space, so the
    # same value must be given; the run reads it from there).
    result = subprocess.run([sys.executable, str(script), "0.4"], cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0
    resumed = sweep.attach("cut", progress=False)
    assert [t.status for t in resumed.trials] == ["completed"] * 6
    finished = {t for t, kinds in before.items() if kinds[-1] == "end"}
    cut_short = set(before) - finished
    assert finished and cut_short
    for trial in range(6):  # what finished ran once; what was cut short ran once more
        starts = [e["e"] for e in events(str(folder), trial)].count("start")
        assert starts == (2 if trial in cut_short else 1), trial
    # The trials no element had taken went to a new batch; those cut short were lost with
    # the client that ran their processes, and the old batch ran them again (its retries).
    manifest = json.loads((folder / "sweep.json").read_text())
    assert len(manifest["batches"]) == 2
    assert manifest["batches"][1]["trials"] == [t for t in range(6) if t not in before]


def test_another_space_under_the_same_name_is_refused_before_anything_runs(workdir: str) -> None:
    s = asha_sweep(name="named")
    s.run()
    batches = sorted(os.listdir(workdir))
    other = sweep.Sweep(
        curve, {"q": sweep.grid([0.1, 0.2])}, metric="loss", name="named", progress=False,
        scheduler=sweep.ASHA(min_t=1, max_t=MAX_T, eta=3),
    )  # fmt: skip
    with pytest.raises(corral.CorralError, match="differs in its trials: 9 then, 2 now.*overwrite=True"):
        other.run()
    assert sorted(os.listdir(workdir)) == batches
    fresh = sweep.Sweep(
        curve, {"q": sweep.grid([0.1, 0.2])}, metric="loss", name="named", overwrite=True, progress=False
    ).run()
    assert [t.status for t in fresh.trials] == ["completed", "completed"]
    manifest = json.loads(Path(s.path, "sweep.json").read_text())
    assert manifest["trials"] == 2 and len(manifest["batches"]) == 1
    assert sorted(os.listdir(Path(s.path, "trials"))) == ["0.log", "1.log"]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"metric": ""}, "metric"),
        ({"mode": "median"}, "mode"),
        ({"scheduler": object()}, "not a scheduler"),
        ({"name": "../up"}, "sweep name"),
        ({"cpus": "many"}, "cpus"),
        ({"trials": 0}, "trials"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    workdir: str, options: dict[str, object], error: str
) -> None:
    kwargs: dict[str, object] = {"metric": "loss", "progress": False, **options}
    space = {"q": sweep.uniform(0, 1)} if "trials" in options else {"q": sweep.grid(QS)}
    with pytest.raises((ValueError, TypeError), match=error):
        sweep.Sweep(curve, space, **kwargs).run()  # type: ignore[arg-type]
    assert not os.path.exists(workdir) or os.listdir(workdir) == []


def test_log_outside_a_trial_does_nothing() -> None:
    assert sweep.log(3, loss=0.5) is None
    assert sweep.current_trial() is None
    assert curve({"q": 0.25}) == pytest.approx(0.25 + 1 / MAX_T)  # train runs as a plain function


def test_table_frame_and_plot(workdir: str, tmp_path: Path) -> None:
    result = asha_sweep(name="looks").run()
    table = result.table()
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["trial", "status", "step", "attempts"]
    assert "q" in lines[0].split() and "fixed.depth" in lines[0].split() and "loss" in lines[0].split()
    assert lines[1].split()[0] == str(result.best().trial)  # best first
    assert len(result.table(rows=3).splitlines()) == 4
    frame = result.frame()
    assert list(frame.columns) == ["trial", "status", "step", "attempts", "q", "fixed.depth", "loss"]
    assert len(frame) == len(QS) and set(frame["status"]) <= {"completed", "pruned"}
    long = result.frame(history=True)
    assert len(long) == sum(len(t.history) for t in result.trials)
    png = result.plot(path=str(tmp_path / "loss.png"))
    data = Path(png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (800, 500) and len(data) > 10_000


def test_table_needs_no_pandas(workdir: str) -> None:
    asha_sweep(name="plain").run()
    script = (
        "import sys; sys.modules['pandas'] = None\n"
        "import corral; from corral import sweep\n"
        f"corral.set_defaults(backend='local', directory={workdir!r})\n"
        "r = sweep.attach('plain', progress=False)\n"
        "print(r.table(rows=2))\n"
        "try:\n    r.frame()\nexcept ImportError as e:\n    print('frame:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.splitlines()[0].startswith("trial") and "pip install pandas" in out.stdout


def test_corral_sweep_status_reads_the_folder_from_any_shell(
    workdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from corral.cli import main

    assert main(["sweep", "status", "--dir", workdir]) == 0
    assert "no sweeps" in capsys.readouterr().out
    crashed = sweep.Sweep(
        crash_on_odd, {"x": sweep.grid([0, 1, 2, 3])}, metric="loss", name="crashes", progress=False
    ).run()  # fmt: skip
    result = asha_sweep(name="curves").run()
    assert main(["sweep", "status", "--dir", workdir]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["crashes", "curves"]
    assert lines[1].split("  ", 1)[1] == result.summary()
    assert (
        "2 failed" in lines[0]
        and crashed.summary().split(" · ")[:3] == lines[0].split("  ", 1)[1].split(" · ")[:3]
    )
    assert main(["sweep", "status", "curves", "--rows", "3", "--dir", workdir]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == result.summary() and out[2].split()[:2] == ["trial", "status"]
    assert len(out) == 2 + 1 + 3 and out[3].split()[0] == str(result.best().trial)
    assert main(["sweep", "status", "nope", "--dir", workdir]) == 1
    assert "no sweep 'nope'" in capsys.readouterr().err


def bowl(config: dict[str, object]) -> float:
    """A curve whose best lr is 1e-2 and best kind "b"; Optuna should find its way there."""
    import math

    target = (math.log10(float(config["lr"])) + 2) ** 2 + (0.0 if config["kind"] == "b" else 0.5)  # type: ignore[arg-type]
    loss = 0.0
    for epoch in range(1, 10):
        loss = target + 1.0 / epoch
        sweep.log(epoch, loss=loss)
    return loss


def test_an_optuna_search_chooses_configs_as_trials_end(workdir: str) -> None:
    space = {"lr": sweep.loguniform(1e-4, 1.0), "kind": sweep.choice(["a", "b"]), "fixed": 7}
    s = sweep.Sweep(
        bowl, space, metric="loss", trials=24, search=sweep.Optuna(seed=3), max_running=2, name="tpe",
        scheduler=sweep.ASHA(min_t=1, max_t=9), progress=False,
    )  # fmt: skip
    result = s.run()
    assert {t.status for t in result.trials} <= {"completed", "pruned"} and len(result.trials) == 24
    chosen = sorted(os.listdir(Path(s.path, "configs")))
    assert chosen == sorted(f"{t}.json" for t in range(24))  # every trial's config was written
    for trial in result.trials:  # the config each trial ran with is the one written for it
        values = json.loads(Path(s.path, "configs", f"{trial.trial}.json").read_text())["values"]
        assert (
            values == {"lr": trial.config["lr"], "kind": trial.config["kind"]} and trial.config["fixed"] == 7
        )
        assert trial.value is None or trial.value == pytest.approx(bowl(trial.config))

    # Model-based: the last third was chosen better than the first (random) third, as every
    # trial's value at step 1 shows (pruned or not).
    def at_first_step(trials: list[sweep.Trial]) -> float:
        return sum(float(t.history[0].metrics["loss"]) for t in trials) / len(trials)  # type: ignore[arg-type]

    assert at_first_step(result.trials[16:]) < at_first_step(result.trials[:8])
    best = result.best()
    assert best.config["kind"] == "b" and 1e-3 < best.config["lr"] < 1e-1


def test_an_optuna_trial_with_no_driver_fails_saying_so_and_a_rerun_runs_it(workdir: str) -> None:
    from corral.frontends.sweep.optuna import ConfigNotChosen
    from corral.frontends.sweep.trial import RunTrial, TrialSpec

    s = sweep.Sweep(
        bowl, {"lr": sweep.loguniform(1e-4, 1.0), "kind": sweep.choice(["a", "b"])}, metric="loss",
        trials=3, search=sweep.Optuna(seed=1, wait=0.5), progress=False, name="nodriver",
    )  # fmt: skip
    s.files.create()
    spec = TrialSpec(s.path, bowl, "loss", "min", None, space=s.space, wait=0.5)
    with pytest.raises(ConfigNotChosen, match="trial 2 waited 0.5 s for its config.*Run the sweep again"):
        RunTrial(spec)(2, None)
    assert [t.status for t in s.run().trials] == ["completed"] * 3


@pytest.mark.parametrize(
    ("space", "error"),
    [
        ({"f": sweep.choice([object(), 1])}, "choices of None, bool, int, float or str"),
        ({"x": sweep.uniform(0, 1)}, None),
    ],
)
def test_an_optuna_search_refuses_what_optuna_cannot_hold(
    workdir: str, space: dict[str, object], error: str | None
) -> None:
    if error is None:
        with pytest.raises(ValueError, match="an Optuna search needs trials"):
            sweep.Sweep(bowl, space, metric="loss", search=sweep.Optuna(), progress=False)
        return
    with pytest.raises(ValueError, match=error):
        sweep.Sweep(bowl, space, metric="loss", trials=4, search=sweep.Optuna(), progress=False)
    assert not os.path.exists(workdir) or os.listdir(workdir) == []


def test_max_running_beyond_the_local_slots_is_said(
    workdir: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CORRAL_LOCAL_SLOTS", "2")
    caplog.set_level("WARNING", logger="corral.frontends.sweep.driver")
    sweep.Sweep(curve, {"q": sweep.grid([0.1, 0.2])}, metric="loss", max_running=8, progress=False).run()
    assert "max_running=8, but the local backend runs 2 trial(s) at once" in caplog.text
    caplog.clear()
    sweep.Sweep(
        curve, {"q": sweep.grid([0.1, 0.2])}, metric="loss", max_running=2, progress=False, name="fits"
    ).run()
    assert "max_running" not in caplog.text


def test_a_sweep_without_a_seed_resumes_with_the_seed_its_first_run_drew(workdir: str) -> None:
    def make() -> sweep.Sweep:
        return sweep.Sweep(
            curve, {"q": sweep.uniform(0, 1)}, metric="loss", trials=4, name="unseeded", progress=False
        )

    first_sweep = make()
    first = first_sweep.run()
    second = make().run()  # a fresh seed was drawn for it, and set aside for the first run's
    assert [t.config for t in second.trials] == [t.config for t in first.trials]
    manifest = json.loads(Path(first_sweep.path, "sweep.json").read_text())
    assert len(manifest["batches"]) == 1 and manifest["search"]["seed"] == first_sweep.search.seed


def diverges(config: dict[str, float]) -> float:
    for epoch in range(1, 10):
        sweep.log(epoch, loss=float("nan") if config["q"] < 0 else config["q"] + 1 / epoch)
    return config["q"]


def test_a_diverged_trial_is_pruned_not_failed(workdir: str) -> None:
    result = sweep.Sweep(
        diverges, {"q": sweep.grid([0.5, -1.0, 0.2])}, metric="loss", max_running=1, name="nan",
        scheduler=sweep.ASHA(min_t=1, max_t=9), progress=False,
    ).run()  # fmt: skip
    assert [t.status for t in result.trials] == ["completed", "pruned", "completed"]
    assert result.trials[1].milestone == 1 and str(result.trials[1].metrics["loss"]) == "nan"
    assert result.best().config["q"] == 0.2


def test_median_stopping_prunes_what_is_worse_than_the_median(workdir: str) -> None:
    qs = [0.3, 0.1, 0.2, 0.9, 0.05, 0.8]
    result = sweep.Sweep(
        curve, {"q": sweep.grid(qs)}, metric="loss", max_running=1, name="median",
        scheduler=sweep.Median(warmup=2, interval=5, min_trials=3), progress=False,
    ).run()  # fmt: skip
    # One at a time: trials 0-2 run to the end (too few before them); 0.9 and 0.8 are worse
    # than the median of those before them at step 7, the first milestone; 0.05 is better.
    assert [t.status for t in result.trials] == [
        "completed",
        "completed",
        "completed",
        "pruned",
        "completed",
        "pruned",
    ]
    assert result.trials[3].milestone == result.trials[5].milestone == 7
    assert result.best().config["q"] == 0.05

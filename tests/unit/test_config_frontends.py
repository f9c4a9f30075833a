"""Every front-end reads the same configuration: Executor, Pool and @task, with profile=."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import corral


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corral.toml").write_text(
        'backend = "local"\nmemory = "1G"\n\n[profiles.long]\ntime = "2:00:00"\ncpus = 2\n'
    )
    return tmp_path


def test_executor_and_pool_take_the_project_file_and_a_profile() -> None:
    plain = corral.Executor()
    assert plain.backend == "local" and plain.resources.memory == 1024 and plain.resources.time is None
    long = corral.Executor(profile="long", cpus=1)  # a keyword beats the profile
    assert (long.resources.time, long.resources.cpus, long.resources.memory) == (timedelta(hours=2), 1, 1024)
    with corral.Pool(2, profile="long") as pool:
        assert pool.resources.time == timedelta(hours=2) and pool.resources.cpus == 2
        assert pool.map(abs, [-1, -2]) == [1, 2]


def test_corral_profile_selects_a_profile_for_every_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_PROFILE", "long")
    assert corral.Executor().resources.cpus == 2
    with corral.Pool(1) as pool:
        assert pool.resources.cpus == 2
    assert corral.config.resolve().resources.time == timedelta(hours=2)


def test_a_typo_in_the_project_file_stops_every_front_end(project: Path) -> None:
    (project / "corral.toml").write_text('backend = "local"\n\n[profiles.long]\ncpu = 2\n')
    for make in (corral.Executor, corral.Pool):
        with pytest.raises(corral.ConfigError, match=r"corral\.toml.*'cpu'.*did you mean 'cpus'"):
            make()
    with pytest.raises(corral.ConfigError, match="'cpu'"):
        corral.sbatch("true")
    assert not (project / ".corral").exists()  # nothing was submitted

"""slurminade's habits where SLURM and Grid Engine see them, without a cluster: the
dependency words of the script (``after``, a join's ``afterany``, ``singleton``), what
``resolve`` makes of raw job ids and barriers, the checks that refuse what a scheduler cannot
keep before anything is submitted, and ``clusters=`` (``-M``): its setting, every command of
the backend, and SLURM's output under ``-M`` as recorded from the test cluster
(tests/data/slurm/*clusters*)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import corral
from corral.backends import get_backend
from corral.backends.base import ArraySpec
from corral.backends.local import LocalBackend
from corral.backends.sge import SgeBackend
from corral.backends.sge_text import qsub_options
from corral.backends.slurm import SlurmBackend
from corral.backends.slurm_text import (
    cluster_argv,
    parse_config,
    parse_sacct,
    parse_sbatch,
    parse_sinfo_cpus,
    parse_squeue,
    sbatch_options,
    squeue_says_unknown,
    transient_failure,
)
from corral.config import resolve
from corral.engine.dependencies import Needs, Resolution, explain
from corral.engine.dependencies import resolve as resolve_needs
from corral.engine.policy import PollPolicy
from corral.engine.request import Request
from corral.errors import ConfigError, ResourceError, SubmissionError
from corral.frontends.attach import on_cluster
from corral.job import Condition, Dependency, JobState
from corral.resources import Resources
from corral.store.batch import BatchStore
from corral.transports.local import LocalTransport

from .fakes import FakeSlurm
from .test_dependencies import static

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
QUICK = PollPolicy(
    files_min=0.01, files_max=0.05, scheduler_min=0.05, scheduler_max=0.05, outcome_grace=0.2, lost_after=30
)


def recorded(name: str) -> str:
    return (DATA / name).read_text()


@dataclass(frozen=True)
class Row:
    job: str
    state: str
    start: str
    end: str


def parse_sacct_times(name: str) -> list[Row]:
    """``sacct -X -n -P -o JobID,State,[Reason,]Start,End`` lines of a recording."""
    rows = [line.split("|") for line in recorded(name).splitlines()]
    return [Row(r[0], r[1], r[-2], r[-1]) for r in rows]


def spec(dependency: Dependency | None = None, **resources: object) -> ArraySpec:
    return ArraySpec(
        batch_dir="/w/b", sub=0, elements=2, resources=Resources.from_options(**resources),
        job_name="corral-square", python=sys.executable, chdir="/w", dependency=dependency,
    )  # fmt: skip


def dependency_lines(s: ArraySpec) -> list[str]:
    return [o for o in sbatch_options(s) if o.startswith(("--dependency", "--kill-on-invalid-dep"))]


# -- the script's dependency words ---------------------------------------------------------------


def test_started_is_slurms_after() -> None:
    assert dependency_lines(spec(Dependency(Condition.STARTED, ("42", "43_1")))) == [
        "--dependency=after:42:43_1",
        "--kill-on-invalid-dep=yes",
    ]


def test_a_barrier_is_a_second_clause_of_afterany_and_singleton_a_third() -> None:
    both = Dependency(Condition.OK, ("42_0",), ended=("40", "41"))
    assert dependency_lines(spec(both, singleton=True)) == [
        "--dependency=afterok:42_0,afterany:40:41,singleton",  # a comma: each must be met
        "--kill-on-invalid-dep=yes",
    ]
    assert dependency_lines(spec(singleton=True)) == ["--dependency=singleton"]
    assert dependency_lines(spec(singleton=False)) == []


def test_the_job_name_singleton_goes_by_is_the_functions_or_job_name() -> None:
    assert spec().name == "corral-square"
    assert spec(job_name="nightly+import").name == "nightly_import"
    assert "--job-name=nightly_import" in sbatch_options(spec(job_name="nightly+import", singleton=True))


def test_singleton_is_checked_as_a_flag() -> None:
    with pytest.raises(ResourceError, match="singleton='yes' must be True or False"):
        Resources.from_options(singleton="yes")
    with pytest.raises(ResourceError, match="did you mean 'singleton'"):
        corral.task(singelton=True)


# -- resolve: raw ids and barriers ---------------------------------------------------------------


def test_raw_ids_go_to_the_scheduler_under_the_condition(tmp_path: Path) -> None:
    a = static(4, 2, "42", tmp_path)
    found = resolve_needs(Needs(Condition.OK, ((a, 3),), job_ids=("4242", "4243_1")))
    assert found == Resolution(True, Dependency(Condition.OK, ("42_1", "4242", "4243_1")))
    alone = resolve_needs(Needs(Condition.STARTED, (), job_ids=("4242",)))
    assert alone.dependency == Dependency(Condition.STARTED, ("4242",))
    assert "4242 (not submitted by corral)" in explain(Needs(Condition.OK, (), job_ids=("4242",)))


def test_a_barrier_adds_afterany_unless_the_condition_implies_it(tmp_path: Path) -> None:
    a = static(4, 2, "42", tmp_path)
    b = static(2, 1, "50", tmp_path, hint="b")
    barrier = ((b, 0), (b, 1), (a, 3))
    ok = resolve_needs(Needs(Condition.OK, ((a, 3),), barrier=barrier)).dependency
    assert ok == Dependency(Condition.OK, ("42_1",), ended=("50",))  # afterok on 42_1 implies it ended
    started = resolve_needs(Needs(Condition.STARTED, ((a, 3),), barrier=barrier)).dependency
    assert started == Dependency(Condition.STARTED, ("42_1",), ended=("50", "42_1"))  # started is not ended
    any_ = resolve_needs(Needs(Condition.ANY, ((a, 0),), barrier=barrier)).dependency
    assert any_ == Dependency(Condition.ANY, ("42_0", "50", "42_1"))  # one clause
    only = resolve_needs(Needs(Condition.ANY, (), barrier=((b, 1),))).dependency
    assert only == Dependency(Condition.ANY, ("50_1",))


def test_a_barrier_call_without_a_job_id_holds_the_batch_back(tmp_path: Path) -> None:
    deferred = static(2, 1, None, tmp_path)
    assert resolve_needs(Needs(Condition.ANY, (), barrier=((deferred, 0),))) == Resolution(False)


# -- what each backend refuses before submitting ------------------------------------------------


def test_the_schedulers_job_id_forms() -> None:
    slurm, sge = SlurmBackend(LocalTransport()), SgeBackend(LocalTransport())
    assert [slurm.outside_job_id(j) for j in ("4242", "4242_3")] == ["4242", "4242_3"]
    assert sge.outside_job_id("4242") == "4242"
    with pytest.raises(SubmissionError, match="not a sge job id; give the job's number"):
        sge.outside_job_id("4242_3")
    with pytest.raises(SubmissionError, match="local backend runs only its own jobs"):
        LocalBackend().outside_job_id("4242")


def test_sge_refuses_singleton_and_started() -> None:
    with pytest.raises(ResourceError, match="singleton=True cannot be expressed on SGE"):
        qsub_options(spec(singleton=True))
    assert Condition.STARTED not in SgeBackend.conditions


def test_sge_holds_on_the_jobs_of_every_clause() -> None:
    words = qsub_options(spec(Dependency(Condition.ANY, ("42_1",), ended=("40", "42_0"))))
    assert "-hold_jid 42,40" in words


def test_sge_refuses_started_before_anything_is_written(tmp_path: Path) -> None:
    cluster = corral.Cluster(SgeBackend(LocalTransport()), str(tmp_path / "cluster"), policy=QUICK)
    with pytest.raises(SubmissionError, match="condition='started'; it can with: 'any'"):
        cluster.submit(
            Request(
                fn=print,
                calls=[((1,), {})],
                resources=Resources(),
                needs=Needs(Condition.STARTED, (), ("42",)),
            )
        )
    assert not (tmp_path / "cluster").exists()


@pytest.fixture
def fake_cluster(workdir: str) -> Iterator[tuple[corral.Cluster, FakeSlurm]]:
    fake = FakeSlurm(run_jobs=False)
    cluster = corral.Cluster(SlurmBackend(fake, clusters="corral-test"), workdir, policy=QUICK)
    yield cluster, fake
    cluster.close()


def test_a_raw_id_is_written_into_the_script(fake_cluster: tuple[corral.Cluster, FakeSlurm]) -> None:
    cluster, _ = fake_cluster
    batch = cluster.submit(
        Request(
            fn=print, calls=[((1,), {})], resources=Resources(), needs=Needs(Condition.ANY, (), ("4242_3",))
        )
    )
    script = Path(batch.subs[0].script_path).read_text()
    assert "#SBATCH --dependency=afterany:4242_3\n" in script


# -- clusters= -----------------------------------------------------------------------------------


def test_clusters_is_a_setting_of_one_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve(clusters="corral-test").clusters == "corral-test"
    assert resolve().clusters is None
    monkeypatch.setenv("CORRAL_CLUSTERS", "gpu-cluster")
    assert resolve().clusters == "gpu-cluster"
    assert resolve(clusters="cpu").clusters == "cpu"
    for bad, message in (("a,b", "name one cluster"), ("all", "one SLURM cluster"), ("-x", "one SLURM")):
        with pytest.raises(ConfigError, match=message):
            resolve(clusters=bad)
    with pytest.raises(ConfigError, match="name one cluster"):
        corral.task(clusters="a,b")


def test_only_slurm_takes_clusters() -> None:
    backend = get_backend("slurm", clusters="corral-test")
    assert isinstance(backend, SlurmBackend) and backend.clusters == "corral-test"
    with pytest.raises(ConfigError, match="the local backend has none"):
        get_backend("local", clusters="corral-test")
    with pytest.raises(ConfigError, match="a Backend instance cannot go together"):
        corral.Executor(backend=LocalBackend(), clusters="corral-test")


def test_cluster_argv_puts_m_after_the_program() -> None:
    assert cluster_argv(["squeue", "-h"], "c1") == ["squeue", "-M", "c1", "-h"]
    assert cluster_argv(["squeue", "-h"], None) == ["squeue", "-h"]


def square(x: int) -> int:
    return x * x


def test_every_command_of_a_map_names_the_cluster(workdir: str) -> None:
    fake = FakeSlurm()
    cluster = corral.Cluster(SlurmBackend(fake, clusters="corral-test"), workdir, policy=QUICK)
    with corral.Executor(cluster=cluster) as ex:
        assert list(ex.map(square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
    backend = cluster.backend
    fake.forget = True  # squeue and sacct know no job: poll asks both
    assert backend.poll(["100"]) == {}
    backend.cancel(["100"])
    backend.widen("100", 4)
    assert backend.queued_jobs() == 0
    cluster.close()
    assert set(fake.names()) == {"sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo"}
    assert all(argv[1:3] == ["-M", "corral-test"] for argv in fake.calls), fake.calls


def test_jobs_of_another_cluster_are_no_dependencies() -> None:
    here, there = SlurmBackend(LocalTransport(), "a"), SlurmBackend(LocalTransport(), "b")
    assert here.shares_jobs_with(SlurmBackend(LocalTransport(), "a"))
    assert not here.shares_jobs_with(there)
    assert not here.shares_jobs_with(SlurmBackend(LocalTransport()))


# -- SLURM's output under -M, recorded from the test cluster (ClusterName corral-test) -----------


def test_sbatch_parsable_with_m_prints_the_cluster_after_the_id() -> None:
    assert recorded("sbatch_parsable_clusters.txt").strip().endswith(";corral-test")
    assert parse_sbatch(recorded("sbatch_parsable_clusters.txt")).isdigit()


def test_squeue_with_m_and_h_has_no_header_and_without_h_a_cluster_line() -> None:
    quiet = parse_squeue(recorded("squeue_clusters.txt"))
    assert quiet and all(s.element_id.split("_")[0].isdigit() for s in quiet)
    headed = recorded("squeue_clusters_header.txt")
    assert headed.startswith("CLUSTER: corral-test\n")
    assert [s for s in parse_squeue(headed) if s.element_id != "JOBID"] == quiet
    assert {s.state for s in quiet} <= {JobState.PENDING, JobState.RUNNING}


def test_squeue_with_m_says_unknown_jobs_as_without_and_scancel_is_silent() -> None:
    rc = int(recorded("squeue_clusters_invalid.rc"))
    assert rc == 1 and squeue_says_unknown(rc, recorded("squeue_clusters_invalid.stderr"))
    assert int(recorded("scancel_clusters_invalid.rc")) == 0  # a cancel that just succeeds
    assert int(recorded("scontrol_update_clusters.rc")) == 0


def test_sacct_sinfo_and_scontrol_with_m_parse_as_without() -> None:
    accounted = parse_sacct(recorded("sacct_clusters.txt"))
    assert accounted and {s.state for s in accounted} == {JobState.CANCELLED}
    assert parse_sinfo_cpus(recorded("sinfo_clusters.txt"))[3] == 8
    assert parse_sinfo_cpus(recorded("sinfo_clusters_header.txt"))[3] == 8  # CLUSTER: line ignored
    assert parse_config(recorded("scontrol_show_config_clusters.txt"))["ClusterName"] == "corral-test"


def test_a_controller_out_of_reach_under_m_is_transient_and_an_unknown_cluster_is_not() -> None:
    assert transient_failure(recorded("squeue_clusters_ctld_down.stderr"))
    for unknown in ("sbatch_clusters_unknown.stderr", "scontrol_show_config_clusters_unknown.stderr"):
        assert "can't be reached now" in recorded(unknown)  # as when the controller is down
        assert not transient_failure(recorded(unknown))  # but slurmdbd knows no such cluster


def test_slurm_runs_a_dependent_of_a_job_it_does_not_know() -> None:
    """afterok on a purged (1) or never seen (99999999) job id: accepted, and run at once."""
    assert parse_sbatch(recorded("sbatch_dependency_unknown_job.txt")).isdigit()
    assert {s.state for s in parse_sacct_times("sacct_dependency_unknown_job.txt")} == {"COMPLETED"}


def test_slurm_runs_the_elements_of_a_singleton_array_together_and_holds_other_jobs() -> None:
    rows = {r.job: r for r in parse_sacct_times("sacct_singleton_after.txt")}
    array = [rows[f"25707_{i}"] for i in range(3)]
    assert len({(r.start, r.end) for r in array}) == 1  # together
    assert rows["25708"].start >= max(r.end for r in array)  # the next job of the name waited
    assert rows["25708"].start > rows["25709"].start  # ... not for an unrelated job
    assert rows["25710"].start == rows["25709"].start < rows["25709"].end  # after: started
    assert "25708|PENDING|Dependency" in recorded("squeue_singleton_after.txt")


def test_a_batch_remembers_its_cluster_for_attach(workdir: str) -> None:
    fake = FakeSlurm()
    cluster = corral.Cluster(SlurmBackend(fake, clusters="corral-test"), workdir, policy=QUICK)
    batch = cluster.submit(Request(fn=square, calls=[((3,), {})], resources=Resources()))
    assert batch.futures[0].result(timeout=30) == 9
    cluster.close()
    manifest = BatchStore(batch.store.path, LocalTransport()).check_format()
    assert manifest["clusters"] == "corral-test"
    assert on_cluster(resolve(), manifest).clusters == "corral-test"  # attach polls with -M there
    assert on_cluster(resolve(clusters="x"), {"backend": "slurm"}).clusters == "x"
    with pytest.raises(ConfigError):
        on_cluster(resolve(), {"clusters": "a;rm -rf"})

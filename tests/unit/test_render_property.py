"""No value of any option, name or path can add a line or a directive to a job script
(issue 11, item 4), checked with arbitrary text on the SLURM and SGE renderers.

For every ArraySpec whose Resources construct (a value Resources refuses never gets this far),
the script has exactly the lines corral means to write: the directives it wrote, found the way
the scheduler finds them (sbatch: ``#SBATCH`` lines before the first command; qsub: every line
starting with its prefix), one exec line, and the user's command verbatim in the here-document.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import Cluster, Request, directives
from corral.backends import sge_text, slurm_text
from corral.backends.base import ArraySpec
from corral.backends.sge import SgeBackend
from corral.backends.slurm import SlurmBackend
from corral.errors import ResourceError, SubmissionError
from corral.job import Condition, Dependency
from corral.resources import RESERVED_OPTIONS, Resources
from corral.transports.local import LocalTransport

from .fakes import FakeSlurm

EXAMPLES = settings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

#: Pieces an attacker would try, mixed into arbitrary text.
NASTY = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "#SBATCH --wrap=id",
         "#$ -l h_rt=1", "#corral$", "#!", "'", '"', "\\", "$(id)", "`id`", ";", " ", "\t", "CORRAL_COMMAND",
         "%", "=", ",", ":", "-", "--", "\u202e", "é", "\U0001f600", "\x00", "\x1b[31m"]  # fmt: skip

#: Any text, with the nasty pieces made likely; lone surrogates included (os.fsdecode makes them).
ANY_TEXT = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=()), max_size=8), st.sampled_from(NASTY)), max_size=3
).map("".join)
#: Text that may well pass Resources' checks: printable, no blanks, quotes or metacharacters.
WORDISH = st.text(
    st.characters(
        exclude_categories=("Cc", "Cs", "Cf", "Co", "Cn", "Zs", "Zl", "Zp"), exclude_characters=" \"'\\#`$;"
    ),
    min_size=1,
    max_size=12,
)
VALUE = st.one_of(ANY_TEXT, WORDISH)
#: A path: anything but NUL, which no path can hold (shell_word refuses it; tested below);
#: the only surrogates are those os.fsdecode makes of undecodable bytes.
PATH = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=12),
        st.sampled_from([p for p in NASTY if "\0" not in p] + ["\udc80", "\udcff"]),
    ),
    max_size=3,
).map("".join)
OPTION_NAME = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True), ANY_TEXT)


def _keep(field: str, value: object) -> bool:
    try:
        Resources.from_options(**{field: value})
    except ResourceError:
        return False
    return True


def build_resources(options: dict[str, Any]) -> Resources:
    """Resources of drawn values; those Resources refuses are left out, one by one."""
    extra = cast(dict[str, object], options.pop("extra"))
    kept = {k: v for k, v in options.items() if v is None or _keep(k, v)}
    return Resources.from_options(**kept, extra={k: v for k, v in extra.items() if _keep("extra", {k: v})})


MAYBE_VALUE = st.none() | VALUE
MAYBE_COUNT = st.none() | st.integers(-1, 10**6)
RESOURCES = st.fixed_dictionaries(
    {
        **dict.fromkeys(("partition", "account", "qos", "constraint", "job_name", "gpus"), MAYBE_VALUE),
        "time": st.none()
        | st.integers(-5, 10**15)
        | VALUE
        | st.builds(timedelta, seconds=st.integers(0, 10**6)),
        "memory": st.none() | st.integers(-5, 2**31) | VALUE,
        **dict.fromkeys(("cpus", "nodes", "tasks", "max_requeues", "signal_grace"), MAYBE_COUNT),
        "extra": st.dictionaries(OPTION_NAME, st.none() | st.booleans() | VALUE | st.integers(), max_size=4),
    }
).map(build_resources)
JOB_IDS = st.lists(st.from_regex(r"[1-9]\d{0,6}(_\d{1,4})?", fullmatch=True), min_size=1, max_size=3)
SPECS = st.builds(
    ArraySpec,
    batch_dir=PATH,
    sub=st.integers(0, 10**4),
    elements=st.integers(1, 10**6),
    resources=RESOURCES,
    job_name=ANY_TEXT.map(
        lambda name: f"corral-{name}"[:64]
    ),  # as submitting.array_specs makes it of __name__
    python=PATH,
    chdir=PATH,
    max_running=st.none() | st.integers(1, 10**4),
    dependency=st.none() | st.builds(Dependency, st.sampled_from(Condition), JOB_IDS.map(tuple)),
    command=st.none() | ANY_TEXT,
)


def printable(line: str) -> bool:
    return all(c.isprintable() for c in line)


def heredoc_lines(spec: ArraySpec) -> list[str]:
    """The lines after the exec line: the command verbatim, the delimiter, the final newline."""
    if spec.command is None:
        return [""]
    return [*spec.command.rstrip("\n").split("\n"), spec.worker_stdin().rsplit("\n", 1)[1], ""]


def abbreviates_reserved(key: str) -> bool:
    return any(option.startswith(key) for option in RESERVED_OPTIONS)


# -- SLURM -----------------------------------------------------------------------------------------


def expected_sbatch_names(spec: ArraySpec) -> list[str]:
    res = spec.resources
    names = ["job-name", "array"] + ["time"] * (res.time is not None)
    typed = [("cpus-per-task", res.cpus), ("mem", res.memory), ("gpus", res.gpus), ("nodes", res.nodes),
             ("ntasks", res.tasks), ("partition", res.partition), ("account", res.account), ("qos", res.qos),
             ("constraint", res.constraint)]  # fmt: skip
    names += [name for name, value in typed if value is not None]
    names += ["requeue" if res.requeues else "no-requeue"] + ["signal"] * (res.warning_seconds() is not None)
    names += [key for key, _ in res.extra]
    return names + ["dependency", "kill-on-invalid-dep"] * (spec.dependency is not None)


def sbatch_directives(script: str) -> list[str]:
    """The directive lines sbatch reads: ``#SBATCH`` lines before the first command."""
    found = []
    for line in script.split("\n")[1:]:
        if line.startswith("#SBATCH"):
            found.append(line)
        elif line.strip() and not line.startswith("#"):
            break
    return found


@EXAMPLES
@given(SPECS)
def test_no_value_adds_a_line_or_a_directive_to_a_slurm_or_an_sge_script(spec: ArraySpec) -> None:
    """2,000 specs, each rendered for both schedulers (drawing them is most of the cost)."""
    check_slurm(spec)
    check_sge(spec)


def check_slurm(spec: ArraySpec) -> None:
    if any(abbreviates_reserved(key) for key, _ in spec.resources.extra):
        spec = replace(spec, resources=replace(spec.resources, extra=()))  # refused (see test_resources)
    script = slurm_text.render_script(spec)
    lines = script.split("\n")
    n = len(expected_sbatch_names(spec))
    trap = ["trap '' USR1  # until the worker catches it"] * (spec.resources.warning_seconds() is not None)
    assert lines[0] == "#!/bin/bash"
    assert lines[1].startswith("# corral: batch ") and printable(lines[1])
    written = lines[2 : 2 + n]
    assert sbatch_directives(script) == written
    names = [re.fullmatch(r"#SBATCH --([a-z][a-z0-9-]*)(?:=(\S+))?", line) for line in written]
    assert all(m is not None for m in names), written
    assert [m.group(1) for m in names if m] == expected_sbatch_names(spec)
    assert all(printable(line) for line in written)
    assert re.fullmatch(r"#SBATCH --job-name=[A-Za-z0-9_.-]{1,64}", written[0])
    values = {m.group(1): m.group(2) for m in names if m}
    for field in ("partition", "account", "qos", "constraint"):
        assert values.get(field) == getattr(spec.resources, field)
    assert lines[2 + n : 2 + n + len(trap)] == trap
    exec_line = lines[2 + n + len(trap)]
    assert exec_line.startswith("exec ") and printable(exec_line)
    assert lines[3 + n + len(trap) :] == heredoc_lines(spec)


# -- SGE -------------------------------------------------------------------------------------------


def sge_expressible(spec: ArraySpec) -> ArraySpec:
    """The spec without what SGE refuses (a ResourceError, tested in test_sge_text)."""
    res = spec.resources
    extra = tuple((k, v) for k, v in res.extra if k not in sge_text.RESERVED_OPTIONS)
    return replace(
        spec,
        resources=replace(res, gpus=None, qos=None, constraint=None, nodes=None, tasks=None, extra=extra),
    )


def expected_qsub_count(spec: ArraySpec) -> int:
    res = spec.resources
    flags = [spec.max_running, res.time, res.memory, res.partition, res.account, spec.dependency]
    return 4 + sum(flag is not None for flag in flags) + ((res.cpus or 1) > 1) + len(res.extra)


SGE_BODY = [
    "index=$((SGE_TASK_ID - 1))  # SGE counts tasks from 1, corral its elements from 0",
    'out=${1//"{job}"/$JOB_ID} err=${2//"{job}"/$JOB_ID}',
    'exec >>"${out//"{index}"/$index}" 2>>"${err//"{index}"/$index}" || exit 1',
    "# SGE's own file keeps what went wrong before this point; empty, it is not needed",
    '[[ -f $SGE_STDOUT_PATH && ! -s $SGE_STDOUT_PATH ]] && rm -f -- "$SGE_STDOUT_PATH"',
]


def check_sge(spec: ArraySpec) -> None:
    spec = sge_expressible(spec)
    script = sge_text.render_script(spec)
    lines = script.split("\n")
    prefix = sge_text.directive_prefix(spec)
    n = expected_qsub_count(spec)
    assert lines[0] == "#!/bin/bash"
    assert lines[1].startswith("# corral: batch ") and printable(lines[1])
    written = lines[2 : 2 + n]
    # qsub reads options from every line that starts with the prefix, here-document included
    assert [line for line in lines if line.startswith(prefix)] == written
    assert all(
        re.fullmatch(rf"{re.escape(prefix)} -[A-Za-z_][A-Za-z0-9_-]*(?: \S+){{0,2}}", line)
        for line in written
    ), written
    assert all(printable(line) for line in written)
    assert re.fullmatch(rf"{re.escape(prefix)} -N [A-Za-z_.-][A-Za-z0-9_.-]{{0,64}}", written[1])
    assert lines[2 + n : 7 + n] == SGE_BODY
    exec_line = lines[7 + n]
    assert exec_line.startswith("exec ") and printable(exec_line)
    assert lines[8 + n :] == heredoc_lines(spec)
    argv = SgeBackend(LocalTransport()).submit_argv(spec, "/w/s.sh", ("/w/{job}.out", "/w/{job}.err"))
    assert (argv[2:4] == ["-C", prefix]) == (prefix != "#$")


# -- the words of the exec line, read back by bash ---------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(PATH, min_size=1, max_size=40))
def test_bash_reads_each_shell_word_back_as_the_text_it_was(words: list[str]) -> None:
    script = "printf '%s\\0' " + directives.shell_line(words) + "\n"
    assert script.count("\n") == 1
    out = subprocess.run(["bash", "-c", script], capture_output=True, env={"LC_ALL": "C"}, check=True).stdout
    assert out.split(b"\0")[:-1] == [w.encode("utf-8", "surrogateescape") for w in words]


def test_shell_word_refuses_a_nul_which_no_command_line_can_carry() -> None:
    with pytest.raises(SubmissionError, match="NUL"):
        directives.shell_word("/tmp/a\0b")


def job(x: int) -> int:
    return x


def test_a_newline_in_a_function_name_cannot_add_a_line_to_the_submitted_script(tmp_path: Path) -> None:
    """The reproduction of item 4, through the engine: the script sbatch is given."""
    job.__name__ = "job\n#SBATCH --wrap=id\nid"
    fake = FakeSlurm(run_jobs=False)
    cluster = Cluster(SlurmBackend(fake), str(tmp_path / "work"))
    try:
        batch = cluster.submit(Request(fn=job, calls=[((1,), {})], resources=Resources.from_options(time=5)))
        script = Path(batch.subs[0].script_path).read_text()
    finally:
        cluster.close()
        job.__name__ = "job"
    lines = script.split("\n")
    assert "id" not in lines and not any(line.startswith("#SBATCH --wrap") for line in lines)
    assert sbatch_directives(script)[0] == "#SBATCH --job-name=corral-job_SBATCH_--wrap_id_id"
    assert len(script.split("\n")) == 2 + len(sbatch_directives(script)) + 2 + 1  # + trap, exec, ""

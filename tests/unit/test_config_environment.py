"""The job's environment (setup, env, python, post, srun, launcher, per_task) as settings: the
same layers as every key, ``env`` merged variable by variable, places read where they are."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from corral.config import describe, resolve, set_defaults
from corral.environment import Environment
from corral.errors import ConfigError, ResourceError

from . import test_config

Places = test_config.Places
places = test_config.places  # the fixture: no real config file, variable or default leaks in

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def test_every_key_in_a_file_converts_as_from_options_does(places: Places) -> None:
    places.write_user(
        'setup = "module load python/3.11\\nsource ~/venv/bin/activate"\n'
        "env = { OMP_NUM_THREADS = 4, LANG = 'C' }\n"
        'python = "python3.11"\n'
        'post = ["echo done"]\n'
        'srun = { cpu-bind = "cores", exclusive = true }\n'
        'launcher = "numactl --interleave=all"\n'
        'per_task = "all"\n'
    )
    environment = resolve().environment
    assert environment == Environment(
        setup=("module load python/3.11", "source ~/venv/bin/activate"),
        env=(("OMP_NUM_THREADS", "4"), ("LANG", "C")),
        python="python3.11",
        post=("echo done",),
        srun=(("cpu-bind", "cores"), ("exclusive", None)),
        launcher=("numactl", "--interleave=all"),
        per_task="all",
    )


def test_nothing_set_is_the_environment_that_adds_nothing() -> None:
    settings = resolve()
    assert settings.environment == Environment() and settings.environment.is_default


def test_set_defaults_and_options(places: Places) -> None:
    set_defaults(setup=["module load a"], per_task=True, launcher=["nsys", "profile"])
    settings = resolve(setup="module load b", srun=True)
    assert settings.environment.setup == ("module load b",)  # replaced whole, not appended
    assert settings.environment.per_task is True and settings.environment.srun == ()
    assert settings.environment.launcher == ("nsys", "profile")
    assert settings.sources["setup"] == "options" and settings.sources["per_task"] == "set_defaults()"


LAYERS = ["set_defaults()", "user file", "project file", "user profile", "project profile", "env", "options"]


@pytest.mark.parametrize("top", range(len(LAYERS)), ids=LAYERS)
def test_python_precedence(top: int, places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    set_defaults(python="p0")
    user = ['python = "p1"'] if top >= 1 else []
    project = ['python = "p2"'] if top >= 2 else []
    user += ["[profiles.x]"] + (['python = "p3"'] if top >= 3 else [])
    project += ["[profiles.x]"] + (['python = "p4"'] if top >= 4 else [])
    places.write_user("\n".join(user) + "\n")
    (places.project / "corral.toml").write_text("\n".join(project) + "\n")
    if top >= 5:
        monkeypatch.setenv("CORRAL_PYTHON", "p5")
    settings = resolve(profile="x", **({"python": "p6"} if top >= 6 else {}))
    assert settings.environment.python == f"p{top}"
    expected = [
        "set_defaults()", str(places.user_file), str(places.project / "corral.toml"),
        f"profile 'x' in {places.user_file}", f"profile 'x' in {places.project / 'corral.toml'}",
        "CORRAL_PYTHON", "options",
    ][top]  # fmt: skip
    assert settings.sources["python"] == expected


def test_env_merges_variable_by_variable_and_false_removes(places: Places) -> None:
    set_defaults(env={"A": "0", "B": "0"})
    places.write_user('env = { B = "1", C = "1" }\n[profiles.p]\nenv = { A = false, D = 3 }\n')
    (places.project / "corral.toml").write_text('env = { C = "2" }\n')
    settings = resolve(profile="p", env={"E": 1.5, "B": False})
    assert settings.environment.env_map == {"C": "2", "D": "3", "E": "1.5"}
    assert settings.sources["env.C"] == str(places.project / "corral.toml")
    assert settings.sources["env.D"] == f"profile 'p' in {places.user_file}"
    assert settings.sources["env.E"] == "options"
    assert "env.A" not in settings.sources and "env.B" not in settings.sources
    assert resolve().environment.env_map == {"A": "0", "B": "1", "C": "2"}  # without the profile


def test_a_higher_layer_turns_srun_and_per_task_off_and_clears_lines(places: Places) -> None:
    places.write_user('setup = ["module load x"]\nsrun = true\nper_task = true\n')
    environment = resolve(srun=False, per_task=False, setup=[]).environment
    assert (environment.srun, environment.per_task, environment.setup) == (None, False, ())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("setup = 3", r"key 'setup' at the top level: setup=3 must be shell lines"),
        ("setup = ['#SBATCH --mem=1G']", r"key 'setup' at the top level: setup: the line .* directive"),
        ('post = ["echo \\u0007"]', r"key 'post' at the top level: post: the line .* control character"),
        ("env = 'A=1'", r"key 'env' at the top level: env='A=1' must be a mapping"),
        ("env = { 'A B' = '1' }", r"key 'env' at the top level: env: 'A B' is not an environment variable"),
        ("env = { CORRAL_DIR = 'x' }", r"key 'env' at the top level: env: CORRAL_DIR is corral's own"),
        ("env = { 'A-B' = false }", r"key 'env' at the top level: env: 'A-B' is not an environment variable"),
        ("env = { A = true }", r"key 'env' at the top level: env: A=True must be a text or a number"),
        ("python = ''", r"key 'python' at the top level: python='' must be an interpreter"),
        ("srun = { ntasks = 2 }", r"key 'srun' at the top level: srun option 'ntasks' sets 'ntasks'"),
        ("srun = 'yes'", r"key 'srun' at the top level: srun='yes' must be True or a mapping"),
        ('launcher = "a \'b"', r"key 'launcher' at the top level: launcher=.* cannot be split"),
        ("per_task = 'some'", r"key 'per_task' at the top level: per_task='some' must be False"),
        ("[profiles.p]\nper_task = 2", r"key 'per_task' in \[profiles.p\]: per_task=2 must be False"),
    ],
)
def test_bad_values_in_a_file_name_file_table_and_key(places: Places, text: str, expected: str) -> None:
    path = places.write_user(text + "\n")
    with pytest.raises(ConfigError, match=expected) as caught:
        resolve()
    assert str(caught.value).startswith(f"{path}: ")


def test_bad_options_are_resource_errors_and_set_defaults_config_errors() -> None:
    with pytest.raises(ResourceError, match="per_task='x' must be False"):
        resolve(per_task="x")
    with pytest.raises(ResourceError, match="env: CORRAL_X is corral's own"):
        resolve(env={"CORRAL_X": False})  # a removal's name is checked too
    with pytest.raises(ConfigError, match=r"set_defaults\(\): setup: the line"):
        set_defaults(setup=["#$ -l h_vmem=1G"])
    with pytest.raises(ResourceError, match="unknown resource option 'setpu'; did you mean 'setup'"):
        resolve(setpu="module load x")
    with pytest.raises(ResourceError, match="did you mean 'python'"):
        resolve(python_path="/usr/bin/python3")


def test_only_corral_python_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CORRAL_SETUP",
        "CORRAL_ENV",
        "CORRAL_POST",
        "CORRAL_SRUN",
        "CORRAL_LAUNCHER",
        "CORRAL_PER_TASK",
    ):
        monkeypatch.setenv(name, "not read")
    monkeypatch.setenv("CORRAL_PYTHON", " python3.12 ")
    settings = resolve()
    assert settings.environment == Environment(python="python3.12")
    assert dict(settings.sources) == {"python": "CORRAL_PYTHON"}
    monkeypatch.setenv("CORRAL_PYTHON", "/opt/py\x1b")
    with pytest.raises(ConfigError, match="environment variable CORRAL_PYTHON=.*control character"):
        resolve()


def test_python_is_read_as_a_place(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    (places.project / "corral.toml").write_text(
        'python = ".venv/bin/python"\n[profiles.name]\npython = "python3"\n'
        '[profiles.home]\npython = "~/py/bin/python"\n'
    )
    (places.project / "sub").mkdir()
    monkeypatch.chdir(places.project / "sub")
    assert resolve().environment.python == str(places.project / ".venv" / "bin" / "python")
    assert resolve(profile="name").environment.python == "python3"  # looked up on the node's PATH
    assert resolve(profile="home").environment.python == str(places.home / "py" / "bin" / "python")
    assert resolve(python=Path("~/bin/python")).environment.python == str(places.home / "bin" / "python")
    assert resolve(python="venv/bin/python").environment.python == "venv/bin/python"  # the job's cwd


def test_describe_shows_the_environment_as_a_file_takes_it(places: Places) -> None:
    places.write_user(
        "setup = ['module load x', 'echo \"hi\"']\nenv = { A = \"it's\", B = 'b\\\\c' }\npython = 'python3'\n"
        "srun = { cpu-bind = 'cores', exclusive = true }\nlauncher = ['nsys', 'profile']\nper_task = true\n"
    )
    settings = resolve(post="echo done")
    text = describe(settings)
    lines = {line.split(" = ")[0]: line for line in text.splitlines()}
    assert lines["setup"].startswith("setup = ['module load x', 'echo \"hi\"']")
    assert lines["env.A"].startswith('env.A = "it\'s"') and lines["env.A"].endswith(f"({places.user_file})")
    assert lines["srun"].startswith("srun = { cpu-bind = 'cores', exclusive = true }")
    assert lines["per_task"].startswith("per_task = true") and lines["post"].endswith("(options)")
    # Every line but the engine's defaults (None) reads back as the same value
    toml = "\n".join(line.rsplit("    (", 1)[0] for line in text.splitlines() if " = None" not in line)
    read = tomllib.loads(toml)
    keys = ("setup", "env", "python", "post", "srun", "launcher", "per_task")
    assert Environment.from_options(**{k: read[k] for k in keys}) == settings.environment
    # Set back to the default: still shown, since a layer said so
    assert re.search(r"^srun = false +\(options\)$", describe(resolve(srun=False)), re.M)
    assert re.search(r"^srun = true +\(options\)$", describe(resolve(srun=True)), re.M)
    places.user_file.unlink()
    assert "srun" not in describe(resolve())

"""The configuration precedence: built-in < set_defaults < user file < project file < profile
< environment < options, and the errors that point at the file, table, key or variable."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from corral import Pool, Resources
from corral.config import ConfigWarning, describe, reset_defaults, resolve, set_defaults
from corral.errors import ConfigError, ResourceError

#: Every variable corral.config reads.
ENV_VARS = [
    "CORRAL_PROFILE", "CORRAL_BACKEND", "CORRAL_DIR", "CORRAL_MAX_RETRIES", "CORRAL_SUBMIT_BUDGET",
    "CORRAL_TIME", "CORRAL_CPUS", "CORRAL_MEMORY", "CORRAL_GPUS", "CORRAL_NODES", "CORRAL_TASKS",
    "CORRAL_PARTITION", "CORRAL_ACCOUNT", "CORRAL_QOS", "CORRAL_CONSTRAINT", "CORRAL_JOB_NAME",
]  # fmt: skip


@dataclass
class Places:
    home: Path
    xdg: Path
    project: Path  # the working directory

    @property
    def user_file(self) -> Path:
        return self.xdg / "corral" / "config.toml"

    def write_user(self, text: str) -> Path:
        self.user_file.parent.mkdir(parents=True, exist_ok=True)
        self.user_file.write_text(text)
        return self.user_file


@pytest.fixture(autouse=True)
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Places]:
    """No real config file, variable or default leaks in; every test has its own folders."""
    home, xdg, project = tmp_path / "home", tmp_path / "xdg", tmp_path / "project"
    for folder in (home, xdg, project):
        folder.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.chdir(project)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    reset_defaults()
    yield Places(home, xdg, project)
    reset_defaults()


# -- each layer alone ----------------------------------------------------------------------------


def test_built_in_defaults() -> None:
    settings = resolve()
    assert (settings.backend, settings.directory, settings.max_retries, settings.submit_budget) == (
        "auto", None, 3, 500,
    )  # fmt: skip
    assert settings.profile is None
    assert settings.resources.partition is None and settings.resources.extra == ()
    assert dict(settings.sources) == {}


def test_set_defaults_alone() -> None:
    set_defaults(partition="short", time="30", backend="local", max_retries=0)
    settings = resolve()
    assert settings.resources.partition == "short"
    assert settings.resources.time == timedelta(minutes=30)
    assert (settings.backend, settings.max_retries) == ("local", 0)
    assert settings.sources["partition"] == "set_defaults()"


def test_user_file_alone(places: Places) -> None:
    path = places.write_user('partition = "batch"\ntime = "1:00:00"\nmemory = "4G"\nsubmit_budget = 0\n')
    settings = resolve()
    assert settings.resources.partition == "batch"
    assert settings.resources.time == timedelta(hours=1)
    assert settings.resources.memory == 4096
    assert settings.submit_budget == 0
    assert settings.sources["memory"] == str(path)


def test_project_corral_toml_alone(places: Places) -> None:
    (places.project / "corral.toml").write_text('account = "proj42"\ncpus = 8\n')
    settings = resolve()
    assert (settings.resources.account, settings.resources.cpus) == ("proj42", 8)
    assert settings.sources["cpus"] == str(places.project / "corral.toml")


def test_project_pyproject_alone(places: Places) -> None:
    (places.project / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.corral]\nqos = "high"\n')
    settings = resolve()
    assert settings.resources.qos == "high"
    assert settings.sources["qos"] == str(places.project / "pyproject.toml")


def test_profile_alone(places: Places) -> None:
    path = places.write_user('[profiles.gpu]\npartition = "gpu"\ngpus = 2\n')
    assert resolve().resources.partition is None  # not selected, not applied
    settings = resolve(profile="gpu")
    assert (settings.resources.partition, settings.resources.gpus) == ("gpu", "2")
    assert settings.profile == "gpu"
    assert settings.sources["partition"] == f"profile 'gpu' in {path}"
    assert settings.sources["profile"] == "argument"


def test_environment_alone(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CORRAL_BACKEND": "slurm", "CORRAL_DIR": "~/work", "CORRAL_MAX_RETRIES": "0",
        "CORRAL_SUBMIT_BUDGET": " 10 ", "CORRAL_TIME": "2-00:00:00", "CORRAL_CPUS": "4",
        "CORRAL_MEMORY": "512M", "CORRAL_GPUS": "a100:1", "CORRAL_NODES": "2", "CORRAL_TASKS": "8",
        "CORRAL_PARTITION": "p", "CORRAL_ACCOUNT": "a", "CORRAL_QOS": "q", "CORRAL_CONSTRAINT": "avx512",
        "CORRAL_JOB_NAME": "j",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    s = resolve()
    r = s.resources
    assert (s.backend, s.directory, s.max_retries, s.submit_budget) == (
        "slurm", str(places.home / "work"), 0, 10,
    )  # fmt: skip
    assert (r.time, r.cpus, r.memory, r.gpus, r.nodes, r.tasks) == (timedelta(days=2), 4, 512, "a100:1", 2, 8)
    assert (r.partition, r.account, r.qos, r.constraint, r.job_name) == ("p", "a", "q", "avx512", "j")
    assert s.sources["directory"] == "CORRAL_DIR" and s.sources["cpus"] == "CORRAL_CPUS"


def test_options_alone() -> None:
    settings = resolve(memory="2G", partition=None, directory=Path("out"))
    assert settings.resources.memory == 2048
    assert settings.resources.partition is None  # None counts as not given
    assert settings.directory == "out"
    assert dict(settings.sources) == {"memory": "options", "directory": "options"}


# -- the order -----------------------------------------------------------------------------------

LAYERS = ["set_defaults()", "user file", "project file", "user profile", "project profile", "env", "options"]


@pytest.mark.parametrize("top", range(len(LAYERS)), ids=LAYERS)
def test_precedence(top: int, places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same key in every layer up to ``top``: the value of ``top`` wins."""
    user, project = [], ["[tool.corral]"]
    if top >= 0:
        set_defaults(partition="p0")
    if top >= 1:
        user.append('partition = "p1"')
    if top >= 2:
        project.append('partition = "p2"')
    if top >= 3:
        user.append('[profiles.x]\npartition = "p3"')
    user.append("[profiles.x]" if top < 3 else "")
    project.append('[tool.corral.profiles.x]\npartition = "p4"' if top >= 4 else "[tool.corral.profiles.x]")
    if top >= 5:
        monkeypatch.setenv("CORRAL_PARTITION", "p5")
    user_path = places.write_user("\n".join(user) + "\n")
    project_path = places.project / "pyproject.toml"
    project_path.write_text("\n".join(project) + "\n")
    options = {"partition": "p6"} if top >= 6 else {}

    settings = resolve(profile="x", **options)

    assert settings.resources.partition == f"p{top}"
    expected_source = [
        "set_defaults()", str(user_path), str(project_path), f"profile 'x' in {user_path}",
        f"profile 'x' in {project_path}", "CORRAL_PARTITION", "options",
    ][top]  # fmt: skip
    assert settings.sources["partition"] == expected_source


def test_user_and_project_profiles_merge_and_project_wins(places: Places) -> None:
    places.write_user('[profiles.gpu]\npartition = "gpu"\naccount = "mine"\n')
    (places.project / "corral.toml").write_text('[profiles.gpu]\npartition = "gpu-proj"\n')
    resources = resolve(profile="gpu").resources
    assert (resources.partition, resources.account) == ("gpu-proj", "mine")


def test_extra_merges_option_by_option_across_layers(places: Places) -> None:
    set_defaults(extra={"a": "0", "b": "0"})
    places.write_user('extra = {b = "1", c = "1"}\n[profiles.p]\nextra = {c = "3", exclusive = true}\n')
    settings = resolve(profile="p", extra={"d": "7"})
    assert dict(settings.resources.extra) == {"a": "0", "b": "1", "c": "3", "exclusive": None, "d": "7"}
    assert settings.sources["extra.a"] == "set_defaults()"
    assert settings.sources["extra.b"] == str(places.user_file)
    assert settings.sources["extra.c"] == f"profile 'p' in {places.user_file}"
    assert settings.sources["extra.d"] == "options"


def test_other_keys_are_replaced_whole() -> None:
    set_defaults(time="1:00:00", gpus="a100:2")
    resources = resolve(gpus=1).resources
    assert (resources.time, resources.gpus) == (timedelta(hours=1), "1")


# -- profiles ------------------------------------------------------------------------------------


def test_profile_from_environment_and_the_argument_wins(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    places.write_user('[profiles.gpu]\npartition = "gpu"\n[profiles.cpu]\npartition = "cpu"\n')
    monkeypatch.setenv("CORRAL_PROFILE", "cpu")
    settings = resolve()
    assert (settings.profile, settings.resources.partition) == ("cpu", "cpu")
    assert settings.sources["profile"] == "CORRAL_PROFILE"
    settings = resolve(profile="gpu")
    assert (settings.profile, settings.resources.partition) == ("gpu", "gpu")
    monkeypatch.setenv("CORRAL_PROFILE", "")  # empty: unset
    assert resolve().profile is None


def test_unknown_profile_lists_the_known_ones(places: Places) -> None:
    places.write_user("[profiles.gpu]\ncpus = 1\n[profiles.bigmem]\nmemory = 1000\n")
    (places.project / "corral.toml").write_text("[profiles.debug]\ncpus = 1\n")
    with pytest.raises(ConfigError) as caught:
        resolve(profile="gpux")
    message = str(caught.value)
    assert "profile 'gpux' is not defined; did you mean 'gpu'?" in message
    assert "'bigmem', 'debug', 'gpu'" in message
    assert str(places.user_file) in message and str(places.project / "corral.toml") in message


def test_unknown_profile_without_any_file(places: Places) -> None:
    with pytest.raises(ConfigError, match="profile 'gpu' is not defined.*profiles defined: none") as caught:
        resolve(profile="gpu")
    assert str(places.user_file) in str(caught.value)


# -- file errors ---------------------------------------------------------------------------------


def test_typo_in_user_file(places: Places) -> None:
    path = places.write_user('partiton = "gpu"\n')
    with pytest.raises(ConfigError) as caught:
        resolve()
    assert str(caught.value).startswith(
        f"{path}: unknown key 'partiton' at the top level; did you mean 'partition'? (known keys: "
    )


def test_typo_in_project_pyproject(places: Places) -> None:
    path = places.project / "pyproject.toml"
    path.write_text("[tool.corral]\nmemroy = 100\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'memroy' in \[tool.corral\]; did you mean 'memory'"
    ) as c:
        resolve()
    assert str(path) in str(c.value)


def test_typo_in_a_profile_that_is_not_selected(places: Places) -> None:
    path = places.project / "pyproject.toml"
    path.write_text('[tool.corral]\ncpus = 2\n[tool.corral.profiles.gpu]\npartiton = "gpu"\n')
    with pytest.raises(ConfigError) as caught:
        resolve()
    assert str(caught.value).startswith(
        f"{path}: unknown key 'partiton' in [tool.corral.profiles.gpu]; did you mean 'partition'? (known"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[tool.corral]\ncpus = "four"\n', r"key 'cpus' in \[tool.corral\]: cpus='four' must be a positive"),
        ("[tool.corral.profiles.gpu]\ntime = 'soon'\n", r"key 'time' in \[tool.corral.profiles.gpu\]: time="),
        ("[tool.corral]\nprofiles = 3\n", r"\[tool.corral.profiles\] must be a table"),
        ("[tool.corral.profiles]\ngpu = 3\n", r"profile 'gpu' must be a table \[tool.corral.profiles.gpu\]"),
        ("[tool]\ncorral = 3\n", r"\[tool.corral\] must be a table"),
        ("[tool.corral]\nmax_retries = -1\n", r"key 'max_retries' in \[tool.corral\]: max_retries=-1"),
        ("[tool.corral]\nbackend = 1\n", r"key 'backend' in \[tool.corral\]: backend=1"),
        ("[tool.corral]\nextra = 'x'\n", r"key 'extra' in \[tool.corral\]: extra must be a mapping"),
        ("[tool.corral]\nextra = {array = '1-3'}\n", r"key 'extra' in \[tool.corral\]: extra option 'array'"),
        (
            "[tool.corral]\nprofile = 'gpu'\n",
            r"unknown key 'profile' in \[tool.corral\]; did you mean 'profiles'",
        ),
        (
            "[tool.corral.profiles.a]\nprofiles = {}\n",
            r"unknown key 'profiles' in \[tool.corral.profiles.a\]",
        ),
    ],
)
def test_wrong_values_in_files_name_file_table_and_key(places: Places, text: str, expected: str) -> None:
    path = places.project / "pyproject.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as caught:
        resolve()
    assert str(caught.value).startswith(f"{path}: ")


def test_toml_syntax_error_names_the_file(places: Places) -> None:
    path = places.write_user('partition = "gpu"\ncpus = = 4\n')
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 2") as caught:
        resolve()
    assert str(caught.value).startswith(str(path))


# -- environment ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CORRAL_CPUS", "four", "CORRAL_CPUS='four' must be a whole number"),
        ("CORRAL_CPUS", "0", "CORRAL_CPUS='0': cpus=0 must be a positive whole number"),
        ("CORRAL_TIME", "soon", "CORRAL_TIME='soon': time='soon' is not a time limit"),
        ("CORRAL_MEMORY", "lots", "CORRAL_MEMORY='lots': memory='lots'"),
        ("CORRAL_MAX_RETRIES", "-1", "CORRAL_MAX_RETRIES='-1': max_retries=-1"),
        ("CORRAL_SUBMIT_BUDGET", "1.5", "CORRAL_SUBMIT_BUDGET='1.5' must be a whole number"),
        ("CORRAL_PARTITION", "a b", "CORRAL_PARTITION='a b': partition="),
    ],
)
def test_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        resolve()
    assert f"environment variable {expected}" in str(caught.value)


def test_empty_variables_are_unset_and_other_corral_variables_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORRAL_CPUS", "")
    monkeypatch.setenv("CORRAL_PARTITION", "  ")
    for name in (
        "CORRAL_LOCAL_SLOTS",
        "CORRAL_SGE_PE",
        "CORRAL_MAX_ARRAY_SIZE",
        "CORRAL_IN_JOB",
        "CORRAL_EXTRA",
    ):
        monkeypatch.setenv(name, "not a value corral.config understands")
    settings = resolve()
    assert settings.resources.cpus is None and settings.resources.partition is None
    assert dict(settings.sources) == {}


# -- finding the files ---------------------------------------------------------------------------


def test_corral_toml_beats_pyproject_in_the_same_folder(
    places: Places, caplog: pytest.LogCaptureFixture
) -> None:
    (places.project / "corral.toml").write_text('qos = "from-corral-toml"\n')
    (places.project / "pyproject.toml").write_text('[tool.corral]\nqos = "from-pyproject"\nbad_key = 1\n')
    with caplog.at_level(logging.WARNING, logger="corral.config"):
        settings = resolve()
    assert settings.resources.qos == "from-corral-toml"
    assert "[tool.corral] is ignored" in caplog.text and "pyproject.toml" in caplog.text


def test_walks_up_from_a_subfolder(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    (places.project / "corral.toml").write_text('account = "up"\n')
    deeper = places.project / "src" / "pkg"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    assert resolve().resources.account == "up"


def test_a_pyproject_without_tool_corral_is_skipped(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    (places.project / "pyproject.toml").write_text('[tool.corral]\naccount = "outer"\n')
    inner = places.project / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "inner"\n[tool.ruff]\nline-length = 99\n')
    monkeypatch.chdir(inner)
    assert resolve().resources.account == "outer"


def test_follows_the_working_directory(
    places: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (places.project / "corral.toml").write_text('account = "one"\n')
    other = tmp_path / "other"
    other.mkdir()
    (other / "corral.toml").write_text('account = "two"\n')
    assert resolve().resources.account == "one"
    monkeypatch.chdir(other)
    assert resolve().resources.account == "two"
    monkeypatch.chdir(places.project)
    assert resolve().resources.account == "one"


def test_xdg_config_home_is_respected(
    places: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    places.write_user('account = "xdg"\n')
    (places.home / ".config" / "corral").mkdir(parents=True)
    (places.home / ".config" / "corral" / "config.toml").write_text('account = "home"\n')
    assert resolve().resources.account == "xdg"
    monkeypatch.delenv("XDG_CONFIG_HOME")  # then ~/.config, with HOME read at call time
    assert resolve().resources.account == "home"
    monkeypatch.setenv("HOME", str(tmp_path / "nowhere"))
    assert resolve().resources.account is None


def test_directory_in_a_file_is_relative_to_the_file(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    (places.project / "corral.toml").write_text('directory = ".corral"\n[profiles.h]\ndirectory = "~/runs"\n')
    (places.project / "sub").mkdir()
    monkeypatch.chdir(places.project / "sub")
    assert resolve().directory == str(places.project / ".corral")
    assert resolve(profile="h").directory == str(places.home / "runs")


# -- set_defaults ----------------------------------------------------------------------------------


def test_set_defaults_checks_keys_and_values_at_once() -> None:
    with pytest.raises(
        ConfigError, match=r"set_defaults\(\): unknown key 'partiton'; did you mean 'partition'"
    ):
        set_defaults(partiton="gpu")
    with pytest.raises(ConfigError, match=r"set_defaults\(\): cpus=0 must be a positive whole number"):
        set_defaults(cpus=0)
    with pytest.raises(ConfigError, match=r"set_defaults\(\): submit_budget=-1"):
        set_defaults(submit_budget=-1)
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        set_defaults(bogus=None)
    with pytest.raises(ConfigError):
        set_defaults(partition="good", memory="a lot")
    assert resolve().resources.partition is None  # a bad call changes nothing


def test_set_defaults_merges_removes_and_resets() -> None:
    set_defaults(partition="a", cpus=2)
    set_defaults(partition="b", account="x")
    resources = resolve().resources
    assert (resources.partition, resources.cpus, resources.account) == ("b", 2, "x")
    set_defaults(cpus=None)
    assert resolve().resources.cpus is None and resolve().resources.partition == "b"
    reset_defaults()
    assert resolve().resources.partition is None


# -- options ---------------------------------------------------------------------------------------


def test_bad_options_raise_resource_errors_as_before() -> None:
    with pytest.raises(ResourceError, match="unknown resource option 'memroy'; did you mean 'memory'"):
        resolve(memroy="4G")
    with pytest.raises(ResourceError, match="cpus=0"):
        resolve(cpus=0)
    with pytest.raises(ConfigError, match="max_retries=-2"):
        resolve(max_retries=-2)


# -- caching and describe --------------------------------------------------------------------------


def test_each_file_is_read_once_until_it_changes(places: Places, caplog: pytest.LogCaptureFixture) -> None:
    path = places.write_user('partition = "one"\n')
    with caplog.at_level(logging.DEBUG, logger="corral.config"):
        for _ in range(50):
            assert resolve().resources.partition == "one"
        assert caplog.text.count(f"reading corral config from {path}") == 1
        path.write_text('partition = "second"\n')
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # even on a coarse clock
        assert resolve().resources.partition == "second"
        path.write_text('partition = "third!"\n')  # same size: the mtime tells
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
        assert resolve().resources.partition == "third!"


def test_a_fixed_file_is_read_again(places: Places) -> None:
    path = places.write_user("cpus = = 1\n")
    with pytest.raises(ConfigError):
        resolve()
    path.write_text("cpus = 1\n")
    assert resolve().resources.cpus == 1


def test_describe_shows_values_and_sources(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    places.write_user('[profiles.gpu]\npartition = "gpu"\ntime = "2-01:00:00"\nextra = {exclusive = true}\n')
    monkeypatch.setenv("CORRAL_CPUS", "4")
    text = describe(resolve(profile="gpu", memory="4G"))
    lines = {line.split(" = ")[0]: line for line in text.splitlines()}
    assert lines["partition"].startswith("partition = 'gpu'")
    assert lines["partition"].endswith(f"(profile 'gpu' in {places.user_file})")
    assert lines["time"].startswith("time = '2-01:00:00'")
    assert lines["cpus"].endswith("(CORRAL_CPUS)")
    assert lines["memory"].startswith("memory = '4096M'") and lines["memory"].endswith("(options)")
    assert lines["extra.exclusive"].startswith("extra.exclusive = true")
    assert lines["backend"].endswith("(built-in default)")
    assert lines["profile"].startswith("profile = 'gpu'")


# -- config files another user could have written (issue 11, item 5) ---------------------------


def nobody() -> tuple[int, int]:
    """The uid and gid of a real second user; the tests that chown need root."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def test_a_project_file_another_user_owns_in_a_parent_folder_is_ignored_with_a_warning(
    places: Places,
) -> None:
    uid, gid = nobody()
    planted = places.project.parent / "corral.toml"  # above the working directory
    planted.write_text('directory = "/tmp/theirs"\nextra = { mail-user = "evil@example.org" }\n')
    os.chown(planted, uid, gid)
    planted.chmod(0o644)
    with pytest.warns(ConfigWarning) as caught:
        settings = resolve()
    assert settings.directory is None and settings.resources.extra == ()
    message = str(caught[0].message)
    assert f"corral config {planted} is ignored: it is owned by nobody (uid {uid}), mode 0644" in message
    assert caught[0].filename == __file__  # it points at the caller, not at corral


def test_a_project_file_others_can_write_is_ignored_and_a_nearer_trusted_one_still_counts(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner = places.project / "sub"
    inner.mkdir()
    (places.project / "pyproject.toml").write_text('[tool.corral]\npartition = "mine"\n')
    writable = inner / "corral.toml"
    writable.write_text('partition = "planted"\n')
    writable.chmod(0o666)
    monkeypatch.chdir(inner)
    with pytest.warns(
        ConfigWarning, match=rf"{writable} is ignored: group or others can write it .*mode 0666"
    ):
        assert resolve().resources.partition is None  # corral.toml ends the walk: no file counts
    writable.chmod(0o600)  # fixed: read at once, although its content did not change
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        assert resolve().resources.partition == "planted"


def test_a_group_writable_user_file_is_ignored_when_the_group_is_shared(places: Places) -> None:
    path = places.write_user('partition = "gpu"\n')
    nobody()  # root, to give the file to a group
    os.chown(path, os.geteuid(), grp.getgrnam("users").gr_gid)  # not the user's private group
    path.chmod(0o664)
    with pytest.warns(ConfigWarning, match=f"{path} is ignored: group or others can write it"):
        assert resolve().resources.partition is None


def test_group_write_is_harmless_in_the_users_private_group(places: Places) -> None:
    """umask 002 systems make files 0664 in a group of one: the owner (here root:root, and no
    other account has gid 0 on this machine; checked first)."""
    if os.geteuid() != 0 or [u.pw_name for u in pwd.getpwall() if u.pw_gid == 0] != ["root"]:
        pytest.skip("needs root, alone in group 0")
    path = places.write_user('partition = "gpu"\n')
    os.chown(path, 0, 0)
    path.chmod(0o664)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        assert resolve().resources.partition == "gpu"


def test_a_user_file_another_user_owns_is_ignored(places: Places) -> None:
    uid, gid = nobody()
    path = places.write_user('partition = "gpu"\n')
    os.chown(path, uid, gid)
    with pytest.warns(ConfigWarning, match=rf"owned by nobody \(uid {uid}\)"):
        assert resolve().resources.partition is None


def test_own_files_are_read_without_a_warning(places: Places) -> None:
    places.write_user('partition = "gpu"\n').chmod(0o644)
    (places.project / "corral.toml").write_text('account = "p1"\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        settings = resolve()
    assert (settings.resources.partition, settings.resources.account) == ("gpu", "p1")


def test_the_warning_comes_once_per_version_of_a_file(places: Places) -> None:
    path = places.write_user('partition = "gpu"\n')
    path.chmod(0o666)
    with pytest.warns(ConfigWarning):
        resolve()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        resolve()  # the same file, unchanged: said once is enough


# -- extra: False removes an option, control characters (issue 11, item 6) ---------------------


def test_extra_false_removes_an_option_a_lower_layer_set(places: Places) -> None:
    places.write_user(
        "extra = { exclusive = true, mail-type = 'END' }\n[profiles.shared]\nextra = { exclusive = false }\n"
    )
    assert resolve().resources.extra == (("exclusive", None), ("mail-type", "END"))
    assert resolve("shared").resources.extra == (("mail-type", "END"),)
    settings = resolve(extra={"mail-type": False, "exclusive": True})
    assert settings.resources.extra == (("exclusive", None),)
    assert "extra.mail-type" not in settings.sources and settings.sources["extra.exclusive"] == "options"


def test_extra_false_names_are_checked_all_the_same(places: Places) -> None:
    with pytest.raises(ResourceError, match="extra option 'array'"):
        resolve(extra={"array": False})


@pytest.mark.parametrize("directory", ["/tmp/a\nb", "/tmp/a\x1b[31m", "/tmp/\u2028"])
def test_a_directory_with_a_control_character_is_refused(directory: str) -> None:
    with pytest.raises(ConfigError, match="control character"):
        resolve(directory=directory)


# -- names from other tools (issue 11, item 9) ---------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("max_workers", "concurrent.futures' max_workers is max_running=N on corral.Executor, processes=N"),
        ("proceses", "did you mean 'processes'? multiprocessing's processes=N is corral.Pool(processes=N)"),
        ("timeout_min", "submitit's timeout_min is corral's time= (whole minutes"),
        ("mem_gb", "submitit's mem_gb is corral's memory="),
        ("cpus_per_task", "cpus_per_task is corral's cpus="),
        ("slurm_partition", "submitit's slurm_partition is corral's partition="),
        ("gpus_per_node", "submitit's gpus_per_node is corral's gpus="),
        ("tasks_per_node", "submitit's tasks_per_node is corral's tasks="),
        ("slurm_additional_parameters", "slurm_additional_parameters is corral's extra={...}"),
        (
            "num_simultaneously_running_tasks",
            "pypoolparty's num_simultaneously_running_tasks is max_running=N",
        ),
        ("work_dir", "pypoolparty's work_dir is corral's directory="),
    ],
)
def test_foreign_names_get_the_corral_name_everywhere(places: Places, key: str, expected: str) -> None:
    with pytest.raises(ResourceError, match=re.escape(expected)):
        resolve(None, **{key: 1})
    with pytest.raises(ConfigError, match=re.escape(expected)):
        set_defaults(**{key: 1})
    path = places.write_user(f"{key} = 1\n")
    with pytest.raises(
        ConfigError, match=re.escape(f"{path}: unknown key '{key}' at the top level")
    ) as caught:
        resolve()
    assert expected in str(caught.value)
    with pytest.raises(ResourceError, match=re.escape(expected)):
        Resources.from_options(**{key: 1})


def test_max_workers_is_not_taken_for_max_retries_and_max_running_is_named(places: Places) -> None:
    with pytest.raises(ResourceError) as caught:
        resolve(max_workers=4)
    assert "max_retries" not in str(caught.value).split("(known keys")[0]
    with pytest.raises(ResourceError, match="an Executor also takes max_running=N, a Pool processes=N"):
        resolve(memroy="4G")


def test_a_config_key_spelled_as_sbatch_spells_it_gets_the_key(places: Places) -> None:
    path = places.write_user('job-name = "x"\n')
    with pytest.raises(
        ConfigError, match=f"{path}: unknown key 'job-name' at the top level; did you mean 'job_name'"
    ):
        resolve()


def test_a_pool_with_a_misspelled_processes_is_told_the_right_name(places: Places) -> None:
    with pytest.raises(ResourceError, match="'proceses'; did you mean 'processes'"):
        Pool(proceses=4)
    with pytest.raises(ResourceError, match="max_workers is max_running=N on corral.Executor, processes=N"):
        Pool(max_workers=4)

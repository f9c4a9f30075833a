"""Which config files corral trusts, like OpenSSH's StrictModes.

A config file sets where pickles are written (``directory``) and what goes into every job
script (``extra``), and corral looks for one in every parent of the working directory. So a
file is read only when it is owned by the user (the effective uid) or root, and no one else
can write it (group write is harmless when the group is the user's private group, as on
systems with umask 002); any other is ignored with a :class:`ConfigWarning` naming it, its owner and its
mode. The check is made on the open descriptor, so the file cannot be swapped between the
check and the read.

The folder holding the file is not checked: a folder others can write lets them put a file
of *theirs* there, which fails the owner check, or replace it by another file the user owns,
which tells corral nothing it does not already trust. Root is trusted, as OpenSSH does: it
can change the user's own files anyway.
"""

from __future__ import annotations

import os
import stat
import sys
import warnings
from pathlib import Path

from .trust import owner_name


class ConfigWarning(UserWarning):
    """A config file was found and ignored: another user owns it, or others can write it."""


def distrust(st: os.stat_result) -> str | None:
    """Why a config file with this status is not trusted, or None when it is."""
    mode = f"mode {stat.S_IMODE(st.st_mode):04o}"
    if st.st_uid not in (os.geteuid(), 0):
        return f"it is owned by {owner_name(st.st_uid)}, {mode}"
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and not private_group(st.st_gid, st.st_uid)):
        return f"group or others can write it (owner {owner_name(st.st_uid)}, {mode})"
    return None


def private_group(gid: int, uid: int) -> bool:
    """True when the group ``gid`` has no member but the user ``uid``: the user private group
    of a umask-002 system, whose write bit lets no one else in (Debian's OpenSSH reads
    StrictModes the same way)."""
    import grp
    import pwd

    try:
        group, owner = grp.getgrgid(gid), pwd.getpwuid(uid)
    except KeyError:
        return False
    if owner.pw_gid != gid or any(name != owner.pw_name for name in group.gr_mem):
        return False
    return all(user.pw_uid == uid for user in pwd.getpwall() if user.pw_gid == gid)


def warn_ignored(path: Path, why: str) -> None:
    """Say that the config file ``path`` is ignored, why, and what to do."""
    warnings.warn(
        f"corral config {path} is ignored: {why}; corral reads only config files that you (or "
        f"root) own and no one else can write (fix: chown it to yourself and chmod go-w {path}, "
        "or remove it)",
        ConfigWarning,
        stacklevel=_outside_corral(),
    )


def _outside_corral() -> int:
    """The stacklevel of the first caller outside the corral package (its Executor, Pool or
    task call): that is the line a user can act on."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level

"""Which folders and files of a work dir corral trusts, like OpenSSH's StrictModes.

Pickles run code when they are loaded, so whoever can write a file corral unpickles can run
code as its user. corral therefore reads pickles only from what the user alone can write:

* the work dir root and each batch folder: a real folder (not a symbolic link) owned by the
  user (the effective uid) and not writable by group or others. Group and others may read
  it; corral itself creates every folder 0700.
* each file it unpickles: opened without following a symbolic link and checked on the open
  descriptor (``fstat``: nothing can swap the file between the check and the read), owned by
  the user and not writable by group or others.

Anything else raises :class:`~corral.errors.UnsafeWorkDirError`, whose message names the
path, its owner and mode, and the fix. A folder check costs one ``lstat`` and runs when a
batch is created, attached or started by the worker; the file check costs one ``fstat`` per
pickle read, so the client's poll loop pays nothing per tick for the folders.
"""

from __future__ import annotations

import os
import stat

#: Permission bits that let someone other than the owner change a folder or file.
_FOREIGN_WRITE = stat.S_IWGRP | stat.S_IWOTH

_CHOOSE_ANOTHER = "choose a work dir of your own with directory= or the CORRAL_DIR environment variable"


def check_private_dir(path: str) -> None:
    """Refuse ``path`` unless it is a folder, not a symbolic link, owned by the user and not
    writable by group or others. ``FileNotFoundError`` when it does not exist."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise refusal(
            f"refusing the work dir folder {path}: it is a symbolic link (to {os.readlink(path)}), "
            f"and corral follows none in a work dir; give the folder it points to instead",
            path=path,
        )
    if not stat.S_ISDIR(info.st_mode):
        raise refusal(f"refusing the work dir folder {path}: it is not a folder", path=path)
    _check_owner_and_mode(path, info, "the work dir folder")


def check_batch_dir(path: str) -> None:
    """The check the worker and ``attach`` make before they unpickle anything of the batch in
    ``path``: the batch folder itself and the root that holds it."""
    path = os.path.abspath(path)
    check_private_dir(os.path.dirname(path))
    check_private_dir(path)


def check_private_file(fd: int, path: str) -> int:
    """Refuse the open file ``fd`` (opened from ``path``) unless it is a regular file the
    user owns and nobody else can write; return its size. Called on every file corral
    unpickles, so the common case is one ``fstat`` and two comparisons."""
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and info.st_mode & _FOREIGN_WRITE == 0 and stat.S_ISREG(info.st_mode):
        return info.st_size
    if not stat.S_ISREG(info.st_mode):
        raise refusal(f"refusing to read {path}: it is not a regular file", path=path)
    _check_owner_and_mode(path, info, "to unpickle")
    return info.st_size  # not reached: the check above refuses


def refusal(message: str, *, path: str, owner: int | None = None, mode: int | None = None) -> Exception:
    """The :class:`~corral.errors.UnsafeWorkDirError` to raise, imported only when there is
    one: the worker, which imports this module on every node, starts faster without it."""
    from .errors import UnsafeWorkDirError

    return UnsafeWorkDirError(message, path=path, owner=owner, mode=mode)


def owner_name(uid: int) -> str:
    """``"alice (uid 1000)"``, or ``"uid 1000"`` for a uid without a user name."""
    import pwd  # here: only a refusal needs it

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check_owner_and_mode(path: str, info: os.stat_result, what: str) -> None:
    mine = info.st_uid == os.geteuid()
    mode = stat.S_IMODE(info.st_mode)
    if mine and not mode & _FOREIGN_WRITE:
        return
    import shlex  # only a refusal needs it

    found = f"it belongs to {owner_name(info.st_uid)} with mode {mode:04o}"
    if mine:
        why = "so others can write it"
        fix = f"make it yours alone with: chmod go-w {shlex.quote(path)}  (or {_CHOOSE_ANOTHER})"
    else:
        why = "not to you"
        fix = _CHOOSE_ANOTHER
    raise refusal(
        f"refusing {what} {path}: {found}, {why}, and corral runs code it reads from there; {fix}",
        path=path, owner=info.st_uid, mode=mode,
    )  # fmt: skip

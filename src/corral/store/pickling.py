"""corral's cloudpickle: code sent by value keeps the file name it was defined in.

cloudpickle 3 writes ``<dynamic-code>`` as the file name of every code object it sends by
value (so that the bytes do not depend on where a function was defined). A remote traceback
then has neither file nor source line. :func:`dumps` pickles as cloudpickle does, but each
code object, nested ones included (inner functions, helpers sent along, a checkpoint's
``Resume``), is rebuilt on the node with its own file name.

Big values in a batch's calls are stored once (:class:`Blobs`): a numpy array or a bytes
object of at least :data:`BIG` bytes is pickled apart, under the hash of its pickle, and the
call holds a reference to it (pickle's persistent ids). Four calls given the same 50 MB array,
or four equal copies of it, write 50 MB, not 200; :func:`load_call` puts the value back on
the node, a fresh copy for each call (a call that changes its array changes no other's).

It lives in a module of its own, not in :mod:`corral.worker.run`: on a node the worker runs as
``__main__``, whose functions cloudpickle would send by value, itself included, forever; and
it imports nothing of corral, so that every layer may use it. Imported by the worker on every
node: keep it light.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

#: Types the standard pickle writes in full: nothing in a value of them can need pickling by
#: value, nor be refused as unshareable, so they skip cloudpickle's machinery (a tenth of its
#: cost) on the hot paths: a call's arguments on the client, its value on the node.
PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})


def _reduce_code(code: types.CodeType) -> tuple[Any, ...]:
    rebuild, args = cloudpickle.Pickler.dispatch_table[types.CodeType](code)
    return _named_code, (rebuild, args, code.co_filename)


class Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no type hints
    """cloudpickle's pickler, but code sent by value keeps its file name: cloudpickle 3
    writes ``<dynamic-code>`` there (for payloads that do not depend on where the function
    was defined), which leaves a remote traceback with neither file nor source line. Code
    objects nested in others (inner functions, helpers sent along) come through here too."""

    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def _named_code(
    rebuild: Callable[..., types.CodeType], args: tuple[Any, ...], filename: str
) -> types.CodeType:
    """On the node: the code object, with the file name it had on the client."""
    return rebuild(*args).replace(co_filename=filename)


def dumps(value: Any, blobs: Blobs | None = None) -> bytes:
    """``cloudpickle.dumps``, keeping the file names of functions sent by value (so that
    a traceback on the node names the user's file and line, and shows the line when the
    file is there too). With ``blobs``, big values go there and the pickle refers to them."""
    with io.BytesIO() as file:
        if blobs is None:
            Pickler(file, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(value)
        else:
            pickler = _BlobPickler(file, protocol=cloudpickle.DEFAULT_PROTOCOL)
            pickler.blobs = blobs
            pickler.dump(value)
        return file.getvalue()


#: A value this big or bigger is stored once per batch (see :class:`Blobs`).
BIG = 1 << 20
#: The tag of a reference to a blob in a call's pickle.
_BLOB = "corral-blob"


def is_big(value: object) -> bool:
    """A value :class:`Blobs` stores apart: a bytes object, or a numpy array of plain
    values, of at least :data:`BIG` bytes."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value) >= BIG  # type: ignore[arg-type]
    if kind.__name__ == "ndarray" and kind.__module__ == "numpy":
        return bool(value.nbytes >= BIG and not value.dtype.hasobject)  # type: ignore[attr-defined]
    return False


class Blobs:
    """The big values of one batch's calls, each stored once, by the hash of its pickle:
    ``data`` maps each hash to the pickle. The same object met again is not pickled again."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        # id -> (the object, its hash); holding the object keeps its id from being reused.
        self._seen: dict[int, tuple[object, str]] = {}

    def add(self, value: object) -> str:
        """Store ``value`` (if it is not there yet); its hash."""
        seen = self._seen.get(id(value))
        if seen is not None and seen[0] is value:
            return seen[1]
        data = dumps(value)
        key = hashlib.sha256(data).hexdigest()
        self.data.setdefault(key, data)
        self._seen[id(value)] = (value, key)
        return key


class KeepsBlobs:
    """For a pickler class (mixed in before it): big values go to ``blobs``, and the pickle
    holds references to them; ``used`` lists the keys it refers to. Set ``blobs`` first."""

    blobs: Blobs

    def persistent_id(self, obj: object) -> tuple[str, str] | None:
        if not is_big(obj):
            return None
        key = self.blobs.add(obj)
        self.__dict__.setdefault("used", []).append(key)
        return (_BLOB, key)

    @property
    def used(self) -> list[str]:
        found: list[str] = self.__dict__.get("used", [])
        return found


class _BlobPickler(KeepsBlobs, Pickler):
    pass


class _BlobUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, blob: Callable[[str], bytes]) -> None:
        super().__init__(file)
        self._blob = blob
        self._loaded: dict[str, object] = {}  # one call given the same array twice gets one

    def persistent_load(self, pid: object) -> object:
        if not (isinstance(pid, tuple) and len(pid) == 2 and pid[0] == _BLOB and isinstance(pid[1], str)):
            raise pickle.UnpicklingError(f"not a reference corral wrote: {pid!r}")
        key = pid[1]
        if key not in self._loaded:
            self._loaded[key] = pickle.loads(self._blob(key))
        return self._loaded[key]


def load_call(data: bytes, blob: Callable[[str], bytes]) -> Any:
    """A call's pickle, read back; ``blob(hash)`` gives the pickle of a big value it refers to."""
    with io.BytesIO(data) as file:
        return _BlobUnpickler(file, blob).load()

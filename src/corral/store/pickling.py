"""corral's cloudpickle: code sent by value keeps the file name it was defined in.

cloudpickle 3 writes ``<dynamic-code>`` as the file name of every code object it sends by
value (so that the bytes do not depend on where a function was defined). A remote traceback
then has neither file nor source line. :func:`dumps` pickles as cloudpickle does, but each
code object, nested ones included (inner functions, helpers sent along, a checkpoint's
``Resume``), is rebuilt on the node with its own file name.

It lives in a module of its own, not in :mod:`corral.worker.run`: on a node the worker runs as
``__main__``, whose functions cloudpickle would send by value, itself included, forever; and
it imports nothing of corral, so that every layer may use it. Imported by the worker on every
node: keep it light.
"""

from __future__ import annotations

import io
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


def dumps(value: Any) -> bytes:
    """``cloudpickle.dumps``, keeping the file names of functions sent by value (so that
    a traceback on the node names the user's file and line, and shows the line when the
    file is there too)."""
    with io.BytesIO() as file:
        Pickler(file, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(value)
        return file.getvalue()

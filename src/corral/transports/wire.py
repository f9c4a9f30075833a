"""The wire between a client and its agent (:mod:`corral.transports.agent`): messages on one
byte stream each way (the agent's stdin and stdout, carried by one SSH session).

Each message is one frame::

    MAGIC (b"CRW1") | header length (u32, little-endian) | blobs length (u64) | header | blobs

The header is one ASCII JSON object. Values in it are JSON's, plus two tagged objects:
``{"$b": i}`` is bytes, the i-th blob (their lengths are the header's ``"blobs"`` list; the
blobs follow the header, joined), and ``{"$d": [[key, value], ...]}`` is a dict (so that no
key of the caller's can pass for a tag). Tuples travel as lists. Nothing is unpickled: the wire
carries what the :class:`~corral.transports.base.Transport` methods take and give.

A request is ``{"id": n, "op": name, "args": [...], "kw": {...}}``; its answer is
``{"id": n, "ok": true, "value": v}`` or ``{"id": n, "ok": false, "error": {...}}``, the error
rebuilt on the client as the exception the agent caught, when it is one of :data:`ERRORS`.

Reading is strict: a frame that is not one (bad magic, a header that is not such an object,
lengths that do not add up) is a :class:`WireError`, and the connection is not trusted after
it. An end of stream before a frame is None; inside one, a WireError.
"""

from __future__ import annotations

import errno as errno_codes
import json
import struct
from collections.abc import Callable
from typing import IO, Any

from ..errors import CorralError, UnsafeWorkDirError, WorkDirError
from .base import CommandTimeout

MAGIC = b"CRW1"
_HEAD = struct.Struct("<4sIQ")
#: The largest header: a scan's answer names files, its bytes go as blobs.
MAX_HEADER = 64 * 1024 * 1024
#: The largest blobs of one message: a 100 MB argument must cross, a runaway length must not.
MAX_BLOBS = 8 * 1024 * 1024 * 1024


class WireError(CorralError):
    """What came over the wire is not a message of this protocol (or was cut short)."""


def encode(message: dict[str, Any]) -> bytes:
    """The frame of ``message``, a dict of string keys (see the module doc)."""
    blobs: list[bytes] = []
    header = {_key(k): _tag(v, blobs) for k, v in message.items()}
    if "blobs" in header:
        raise WireError("a message may not have a key 'blobs': the frame's own")
    header["blobs"] = [len(b) for b in blobs]
    head = json.dumps(header, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")
    joined = b"".join(blobs)
    if len(head) > MAX_HEADER or len(joined) > MAX_BLOBS:
        raise WireError(f"a message of {len(head)} + {len(joined)} bytes is over the limits")
    return _HEAD.pack(MAGIC, len(head), len(joined)) + head + joined


def read_message(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next message on ``stream``; None at a clean end (before any byte of a frame)."""
    first = stream.read(_HEAD.size)
    if not first:
        return None
    prefix = first + _read_exactly(stream, _HEAD.size - len(first))
    magic, header_length, blobs_length = _HEAD.unpack(prefix)
    if magic != MAGIC:
        raise WireError(f"not a corral wire frame (it starts {prefix[:8]!r})")
    if header_length > MAX_HEADER or blobs_length > MAX_BLOBS:
        raise WireError(f"a frame of {header_length} + {blobs_length} bytes is over the limits")
    header = _read_exactly(stream, header_length)
    blobs = _read_exactly(stream, blobs_length)
    return decode(header, blobs)


def decode(header: bytes, joined: bytes) -> dict[str, Any]:
    """The message of a frame's ``header`` and ``joined`` blobs."""
    try:
        raw = json.loads(header.decode("ascii"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"a frame's header is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise WireError("a frame's header is not a JSON object")
    lengths = raw.pop("blobs", None)
    if not isinstance(lengths, list) or not all(type(n) is int and n >= 0 for n in lengths):
        raise WireError("a frame's header has no list of blob lengths")
    if sum(lengths) != len(joined):
        raise WireError("a frame's blob lengths do not add up to its blobs")
    blobs, start = [], 0
    for n in lengths:
        blobs.append(joined[start : start + n])
        start += n
    message = {key: _untag(value, blobs) for key, value in raw.items()}
    if type(message.get("id")) is not int:
        raise WireError("a message has no integer id")
    return message


def _tag(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        blobs.append(bytes(value))
        return {"$b": len(blobs) - 1}
    if isinstance(value, dict):
        return {"$d": [[_key(k), _tag(v, blobs)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_tag(v, blobs) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise WireError(f"a {type(value).__name__} cannot cross the wire")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise WireError(f"a dict key must be a string to cross the wire, not {type(key).__name__}")
    return key


def _untag(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, list):
        return [_untag(v, blobs) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"$b"} and type(value["$b"]) is int and 0 <= value["$b"] < len(blobs):
        return blobs[value["$b"]]
    if set(value) == {"$d"} and isinstance(value["$d"], list):
        pairs = value["$d"]
        if all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
            return {k: _untag(v, blobs) for k, v in pairs}
    raise WireError(f"an object on the wire that is neither bytes nor a dict: {sorted(value)[:5]}")


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise WireError(f"the stream ended inside a frame ({n - left} of {n} bytes read)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number the wire carries")


# -- errors ---------------------------------------------------------------------------------------


def _os_error(kind: type[OSError]) -> Callable[[dict[str, Any]], BaseException]:
    def make(fields: dict[str, Any]) -> BaseException:
        code, name = fields.get("errno"), fields.get("filename")
        if isinstance(code, int) and isinstance(name, str):
            return kind(code, str(fields.get("strerror") or errno_codes.errorcode.get(code, "")), name)
        return kind(str(fields.get("message", "")))

    return make


#: The exceptions an agent's answer may carry, rebuilt as themselves on the client; any other
#: comes back as a :class:`RemoteAgentError` naming its type.
ERRORS: dict[str, Callable[[dict[str, Any]], BaseException]] = {
    "FileNotFoundError": _os_error(FileNotFoundError),
    "FileExistsError": _os_error(FileExistsError),
    "NotADirectoryError": _os_error(NotADirectoryError),
    "IsADirectoryError": _os_error(IsADirectoryError),
    "PermissionError": _os_error(PermissionError),
    "OSError": _os_error(OSError),
    "ValueError": lambda f: ValueError(str(f.get("message", ""))),
    "CommandTimeout": lambda f: CommandTimeout(str(f.get("message", ""))),
    "WorkDirError": lambda f: WorkDirError(str(f.get("message", "")), path=str(f.get("path", ""))),
    "UnsafeWorkDirError": lambda f: UnsafeWorkDirError(
        str(f.get("message", "")),
        path=str(f.get("path", "")),
        owner=f.get("owner") if type(f.get("owner")) is int else None,
        mode=f.get("mode") if type(f.get("mode")) is int else None,
    ),
}


class RemoteAgentError(CorralError):
    """The agent failed with an exception the wire does not rebuild (a bug, or the remote
    host's own trouble); the message names its type and says what it said."""


def error_fields(exc: BaseException) -> dict[str, Any]:
    """What an answer says of ``exc`` (see :data:`ERRORS`)."""
    kind = type(exc).__name__
    fields: dict[str, Any] = {"type": kind if kind in ERRORS else "", "message": str(exc), "name": kind}
    if isinstance(exc, OSError) and exc.errno is not None:
        fields |= {"errno": exc.errno, "strerror": exc.strerror, "filename": exc.filename}
    for attr in ("path", "owner", "mode"):
        value = getattr(exc, attr, None)
        if isinstance(value, (str, int)):
            fields[attr] = value
    return fields


def rebuild_error(fields: Any) -> BaseException:
    """The exception an answer's error fields describe."""
    if not isinstance(fields, dict):
        return WireError("an error answer without its fields")
    make = ERRORS.get(str(fields.get("type", "")))
    if make is None:
        return RemoteAgentError(f"the agent failed: {fields.get('name', '?')}: {fields.get('message', '')}")
    return make(fields)

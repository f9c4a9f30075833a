"""Loaded by every Python that has this folder on PYTHONPATH (the jobs of a fault test):
with CORRAL_FAULT_STREAM_DIR set, an element appends its stream's records to a side file
there, ``<batch>~<element>.log``, instead of ``streams/<element>.log``, and the test's mover
appends them to the real stream later, as a slow shared filesystem would show them: the
records of an element reach the client after the element has ended. Test code only: corral
itself knows nothing of it."""

from __future__ import annotations

import os

if os.environ.get("CORRAL_FAULT_STREAM_DIR"):
    from corral.store import streams

    _open_stream = streams.StreamWriter.__init__

    def _write_aside(self, path):  # type: ignore[no-untyped-def]
        stream = os.path.abspath(os.fspath(path))
        batch = os.path.basename(os.path.dirname(os.path.dirname(stream)))
        side = os.path.join(os.environ["CORRAL_FAULT_STREAM_DIR"], f"{batch}~{os.path.basename(stream)}")
        _open_stream(self, side)

    # The class itself, not a name bound to it: the worker's modules imported it already.
    streams.StreamWriter.__init__ = _write_aside  # type: ignore[method-assign]

"""Text from a work dir made safe to show on a terminal.

A work dir holds text that its readers did not write: function names, exception messages,
tracebacks, whatever a call printed, host names, folder names. A terminal obeys the control
characters in what it is given (ESC sequences retitle the window, clear the screen, move the
cursor, rewrite earlier lines, and some terminals answer queries by typing into the shell;
``\\r`` and backspace overwrite what was shown), so everything the ``corral`` command prints
from a work dir passes through :func:`printable` first.

Complete escape sequences are removed whole (so the colours of a test runner's output leave
no ``[31m`` debris behind), then every control character that is left, C0 and C1 alike, and
the Unicode bidirectional overrides that make text read differently from what it is.
"""

from __future__ import annotations

import re

# ECMA-48: CSI "ESC [" (or the C1 byte 0x9b), parameters, intermediates, one final byte.
_CSI = r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
# OSC, DCS, SOS, PM, APC: a string up to BEL or ST ("ESC \" or 0x9c), in 7- or 8-bit form.
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
# Every other escape sequence: ESC, intermediates, one final byte ("ESC c" resets the terminal).
_ESCAPE = r"\x1b[ -/]*[0-~]"
_SEQUENCE = re.compile(f"{_STRING}|{_CSI}|{_ESCAPE}")

# C0 but newline and tab, DEL, C1; and the bidi embeddings, overrides and isolates.
_BIDI = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
# In one-line values, the characters that would start a new line or a column.
_LINE_BREAK = re.compile(r"\r\n|[\r\n\t\v\f\x85\u2028\u2029]")


def printable(text: str, *, multiline: bool = True) -> str:
    """``text`` without escape sequences or control characters, ready for a terminal.

    With ``multiline`` (the default, for logs, tracebacks and messages) newlines and tabs
    stay, and a carriage return becomes a newline (a progress bar's updates show as lines
    instead of overwriting each other). Without it (for one value on a line: a function, host
    or folder name) every line break and tab becomes a space, so a value cannot add a line
    or a column to what is shown around it.
    """
    text = _SEQUENCE.sub("", text)
    if multiline:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    else:
        text = _LINE_BREAK.sub(" ", text)
    return _CONTROL.sub("", text)

"""One sanitizer for every value that reaches a line of a job script. Pure.

Shared by :class:`~corral.resources.Resources`, which refuses a bad value when it is built,
and by the backends' renderers, which write the lines; so it sits below both and imports
nothing of corral but its errors.

A job script is read twice: by the scheduler, which takes every line that starts with its
prefix (``#SBATCH`` before the first command; ``#$`` anywhere, here-documents included) as
options, and by bash. So no value may add a line or split into more words than corral
meant. The rules, one per kind of value:

- a **job name** (the function's ``__name__``, or ``job_name=``) is reduced to letters,
  digits, ``_ . -`` (:func:`job_name`): any text makes a valid name;
- a **directive value** (partition, account, ``extra`` options, ...) must be one printable
  word without quotes or shell metacharacters (:func:`word_problem`); Resources refuses any
  other with a ResourceError when it is built, before anything is written;
- an **extra option name** must not be, nor abbreviate, an option corral sets itself
  (:func:`abbreviated`): sbatch, like every getopt_long program, takes ``--arr`` for
  ``--array``;
- a **path or argument on the command line** (the work dir, the interpreter) is one shell
  word on one line (:func:`shell_word`), quoted with ``$'...'`` escapes when it holds a
  control character; only a NUL, which no path can hold, is refused;
- a **comment** shows control characters as ``?`` (:func:`comment`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

from .errors import ResourceError, SubmissionError

#: Longest job name written (SLURM keeps more, but squeue's columns and SGE do not).
JOB_NAME_MAX = 64
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: Characters a directive value may not hold besides unprintable ones: blanks split words,
#: quotes and backslashes are read by the schedulers' own parsers, the rest mean something
#: to a shell or end a directive early.
_WORD_FORBIDDEN = re.compile(r"[\s\"'\\#`$;]")


def job_name(text: str) -> str:
    """A name safe on any directive line: runs of other characters become ``_``, at most
    JOB_NAME_MAX characters, ``corral`` when nothing is left."""
    return _NAME_UNSAFE.sub("_", text)[:JOB_NAME_MAX] or "corral"


def unprintable(text: str) -> str | None:
    """The first character of ``text`` that is not printable (a control or format
    character, a line or paragraph separator, a lone surrogate), as ``repr``; None if none."""
    return next((repr(c) for c in text if not c.isprintable()), None)


def word_problem(text: str) -> str | None:
    """Why ``text`` cannot be the value of a directive, or None when it can."""
    if not text:
        return "it is empty"
    if (char := unprintable(text)) is not None:
        return f"it holds the control character {char}"
    if (match := _WORD_FORBIDDEN.search(text)) is not None:
        return (
            f"it holds {match.group()!r}: blanks, quotes, '\\', '#', '$', ';' and backticks are not allowed"
        )
    return None


def check_text(name: str, value: str) -> None:
    """ResourceError unless ``value`` (the option ``name``) can be a directive's value."""
    if (problem := word_problem(value)) is not None:
        raise ResourceError(f"{name}={value!r} cannot be written into a job script: {problem}")


def abbreviated(key: str, reserved: Iterable[str]) -> str | None:
    """The reserved option that the option name ``key`` is, or abbreviates (a prefix of it:
    getopt_long accepts any unambiguous prefix of a long option); None if none."""
    return next((option for option in sorted(reserved) if option.startswith(key)), None)


def check_extra(extra: Iterable[tuple[str, str | None]], reserved: Iterable[str], scheduler: str) -> None:
    """ResourceError for an ``extra`` option that would set, even abbreviated, an option that
    corral sets itself on ``scheduler``."""
    reserved = frozenset(reserved)
    for key, _ in extra:
        if (option := abbreviated(key, reserved)) is not None:
            what = "is" if option == key else f"abbreviates {option!r}, which is"
            raise ResourceError(
                f"extra option {key!r} {what} set by corral or has a typed field on {scheduler}; "
                "use the named resource instead"
            )


def shell_word(text: str) -> str:
    """``text`` as one bash word on one line: shell-quoted, or ``$'...'`` with escapes when
    it holds a character that is not printable (a newline in a quoted word would still
    start a new line of the script, and qsub reads every line). SubmissionError for a NUL,
    which bash cannot pass on."""
    if "\0" in text:
        raise SubmissionError(f"{text!r} holds a NUL character, which no command line can carry")
    if unprintable(text) is None:
        return shlex.quote(text)
    return "$'" + "".join(_escaped(c) for c in text) + "'"


def _escaped(char: str) -> str:
    if char in "\\'":
        return "\\" + char
    if char.isprintable():
        return char
    # The character's bytes, whatever bash's locale; a surrogate from os.fsdecode is the
    # byte it stands for.
    try:
        data = char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise SubmissionError(f"{char!r} is not a character a file name can hold") from None
    return "".join(f"\\x{byte:02x}" for byte in data)


def shell_line(argv: Sequence[str]) -> str:
    """A command as one line of bash (see :func:`shell_word`)."""
    return " ".join(shell_word(word) for word in argv)


def comment(text: str) -> str:
    """``text`` fit for a comment line: what is not printable shows as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)

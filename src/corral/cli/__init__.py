"""The ``corral`` command (:mod:`.app`): reads the work dir through :mod:`corral.store`,
never unpickles, and prints only what :mod:`.display` made safe for a terminal."""

from .app import main

__all__ = ["main"]

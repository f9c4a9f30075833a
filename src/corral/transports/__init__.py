"""Transports: how corral reaches the host where the scheduler and the work dir live."""

from .base import CommandResult, CommandTimeout, Transport
from .local import LocalTransport

__all__ = ["CommandResult", "CommandTimeout", "LocalTransport", "Transport"]

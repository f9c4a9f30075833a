"""Backends by name. Modules are imported only when their backend is asked for.

``auto`` picks ``slurm`` when ``sbatch`` exists and the controller answers, else ``sge`` when
the Grid Engine tools exist and qmaster answers, else ``local``, and logs which.
``multiprocessing`` is another name for ``local``. ``steps`` (calls as job steps of the SLURM
allocation this process runs in) is never chosen by ``auto``: only where it is asked for.
"""

from __future__ import annotations

import importlib
import logging

from ..errors import ConfigError, CorralError
from ..transports.base import Transport
from ..transports.local import LocalTransport
from .base import ArraySpec, Backend, Limits, Submission

log = logging.getLogger(__name__)

#: name -> "module:Class", relative to this package.
REGISTRY: dict[str, str] = {
    "slurm": "slurm:SlurmBackend",
    "sge": "sge:SgeBackend",
    "local": "local:LocalBackend",
    "steps": "steps:StepsBackend",
    "sequential": "sequential:SequentialBackend",
}
ALIASES = {"multiprocessing": "local"}
NAMES = (*REGISTRY, *ALIASES, "auto")


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name`` (an alias is followed; ``auto`` is not a class)."""
    key = ALIASES.get(name, name)
    if key not in REGISTRY:
        raise CorralError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    module_name, class_name = REGISTRY[key].split(":")
    module = importlib.import_module(f".{module_name}", __name__)
    cls: type[Backend] = getattr(module, class_name)
    return cls


def resolve_name(name: str, transport: Transport | None = None) -> str:
    """Turn ``auto`` (and aliases) into a concrete backend name."""
    if name != "auto":
        backend_class(name)  # fails early on a typo
        return ALIASES.get(name, name)
    from .sge import SgeBackend
    from .slurm import SlurmBackend

    here = transport or LocalTransport()
    if SlurmBackend.available(here):
        log.info("backend 'auto' chose slurm: the controller answers")
        return "slurm"
    if SgeBackend.available(here):
        log.info("backend 'auto' chose sge: no SLURM controller answers here, an SGE qmaster does")
        return "sge"
    log.info("backend 'auto' chose local: neither a SLURM controller nor an SGE qmaster answers here")
    return "local"


def get_backend(
    name: str = "auto", transport: Transport | None = None, *, clusters: str | None = None
) -> Backend:
    """A new backend instance for ``name``. ``clusters`` (SLURM's ``-M``) goes to the SLURM
    backend; when ``auto`` chose another one it is left out (a site's setting on a laptop),
    and a backend named outright that has no clusters is a ConfigError."""
    chosen = resolve_name(name, transport)
    cls = backend_class(chosen)
    if clusters is None:
        return cls(transport or LocalTransport())
    if chosen == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(transport or LocalTransport(), clusters=clusters)
    if name != "auto":
        raise ConfigError(
            f"clusters={clusters!r} names a SLURM cluster (-M), and the {chosen} backend has none"
        )
    log.info("clusters=%r left out: backend 'auto' chose %s, not slurm", clusters, chosen)
    return cls(transport or LocalTransport())


__all__ = [
    "ALIASES",
    "ArraySpec",
    "Backend",
    "Limits",
    "NAMES",
    "REGISTRY",
    "Submission",
    "backend_class",
    "get_backend",
    "resolve_name",
]

"""corral as a joblib backend: ``import corral.joblib``, then ``backend="corral"``.

::

    import joblib
    import corral.joblib  # registers the "corral" backend with joblib

    with joblib.parallel_config(backend="corral", scheduler="slurm", time="1:00:00", cpus=2):
        squares = joblib.Parallel(n_jobs=-1)(joblib.delayed(pow)(i, 2) for i in range(1000))
        GridSearchCV(SVC(), grid, n_jobs=-1).fit(X, y)  # scikit-learn's n_jobs, on the cluster

Each ``Parallel`` call is one batch of corral calls (one array job); the keywords are the
Executor's, with corral's backend named ``scheduler``. joblib offers no entry point for
backends (its list of external ones is fixed in its code), so importing this module is what
registers the name: the one thing corral does at import time, and only here. See
:mod:`corral.frontends.joblib_backend` for how joblib's calls reach the engine, and
``docs/joblib.md`` for the guide. Needs joblib >= 1.3 (``pip install 'corral[joblib]'``).
"""

from __future__ import annotations

from .frontends.joblib_backend import NAME, CorralBackend, register

register()

__all__ = ["NAME", "CorralBackend", "register"]

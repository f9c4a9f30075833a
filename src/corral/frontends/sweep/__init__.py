"""Sweeps: one training function over a search space, as one batch, with early stopping
decided where the trials run. The public names are in :mod:`corral.sweep`; the parts:

* :mod:`.space` — dimensions and spaces; :mod:`.search` — ``Random`` and ``Grid``: pure, no numpy;
* :mod:`.schedulers` — ASHA and median stopping: pure decision rules;
* :mod:`.trial` — on the node: the call each trial runs as, ``log`` and ``Pruned``;
* :mod:`.driver` — ``Sweep.run()``: check, submit, resume;
* :mod:`.watching` — the trials' futures and logs, the summary line, and ``attach``;
* :mod:`.optuna` — model-based search through Optuna's samplers (ask and tell);
* :mod:`.results` — trials, ``best``, ``table``, ``frame``, ``plot``.

Kept empty of imports: a node that runs a trial loads :mod:`.trial` and what it needs only.
"""

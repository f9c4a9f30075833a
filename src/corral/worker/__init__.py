"""Everything that runs on the compute nodes: ``python -m corral.worker`` (:mod:`.run`) runs
an array element's calls, and :mod:`.checkpoint` lets a call stop and resume. It reads and
writes the batch folder through :mod:`corral.store` only, and names no scheduler: what a
backend wants of it (how to be requeued) comes to it as data in the submission's plan.
Imports nothing at import time: a worker's start-up is every job's."""

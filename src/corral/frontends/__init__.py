"""The front-ends users know: :mod:`.executor` (``concurrent.futures``), :mod:`.pool`
(``multiprocessing.Pool``), :mod:`.tasks` and :mod:`.batching` (slurminade's ``@task``),
and :mod:`.attach` (watch a batch again from another process). They turn calls into
requests for the engine and hand back futures; none of them polls or submits on its own."""

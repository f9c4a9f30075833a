"""The engine: :class:`~.cluster.Cluster` writes a batch's calls, submits them as few array
jobs as the scheduler's limits allow, watches every batch with one poll loop, decides retry
or failure, and completes the futures."""

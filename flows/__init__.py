"""Prefect flows for every wherewhen stage, their deployments, and the ``wherewhen`` command line.

Modules: ``build_dataset``, ``extract_features``, ``train_head``, ``evaluate``, ``explain``
and ``demo`` hold one flow each (built from small named tasks); ``dask_runner`` sizes the
Dask task runner; ``caching`` holds the cache policies; ``artifacts`` turns summaries into
Prefect artifacts; ``deployments`` serves them all; ``cli`` is the ``wherewhen`` command.
"""

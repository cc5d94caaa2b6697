"""Sharded indexes beyond one process: building them (``build.py``: the driver; ``worker.py``:
the work done where a worker runs; ``runners.py``: workers in this process, local processes or
Ray actors) and searching them on Ray actors (``ray_search.py``).

The layout and the in-process search live in ``retriever.kinds.sharded``; this layer sits above
the kinds (it builds with ``kinds.write_kind``) and below the API (``Retriever.build(...,
shards=N)``, ``Retriever.load(..., ray=...)``). Ray is optional (pip extra ``ray``) and
imported only when asked for.
"""

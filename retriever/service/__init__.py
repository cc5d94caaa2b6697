"""A search service over loaded indexes (``retriever serve``): a thin FastAPI layer on the API.

Layer: above ``retriever.api``; it may import the API, ``retriever.kinds``, ``eval`` and
``indexing``, and only the CLI imports it. Importing it needs the pip extra ``serve`` (fastapi,
uvicorn). ``create_app(paths)`` returns the ASGI app; the indexes load in its lifespan.

Modules: ``app`` (routes, error handling, lifespan), ``schemas`` (request models),
``served`` (the served indexes and their reload), ``batcher`` (the micro-batcher),
``page`` (the HTML page at ``/``).
"""

from retriever.service.app import create_app

__all__ = ["create_app"]

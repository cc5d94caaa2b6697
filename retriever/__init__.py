"""retriever: dense and learned-sparse retrieval with BEIR evaluation.

``from retriever import Retriever`` is the entry point; see ``Retriever.build`` and
``Retriever.load``. Submodules are imported lazily so the CLI starts instantly.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Retriever", "Hit", "__version__"]


def __getattr__(name: str):
    if name == "Retriever":
        from retriever.api import Retriever

        return Retriever
    if name == "Hit":
        from indexing.results import Hit

        return Hit
    raise AttributeError(f"module 'retriever' has no attribute {name!r}")

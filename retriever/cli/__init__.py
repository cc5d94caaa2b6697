"""The ``retriever`` command line: one module per command group, all on ``main``.

Nothing outside this package imports it. Heavy modules (torch, faiss, pyserini) are imported
inside the commands, so ``retriever --help`` is instant.
"""

from retriever.cli import beir, datasets, heads, hybrid, index, info, mine, models, search, serve, train  # noqa: F401  (registers)
from retriever.cli.main import KIND_NAMES, _os_error, main  # noqa: F401

main.add_command(train.train)

__all__ = ["main"]

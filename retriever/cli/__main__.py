"""``python -m retriever.cli ...`` (and ``torchrun -m retriever.cli train ...``)."""

import sys

from retriever.cli import main

sys.exit(main())

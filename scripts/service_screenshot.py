"""Take the screenshot of the service's search page that the README shows (docs/service.png).

    python scripts/service_screenshot.py [--index DIR ...] [--query TEXT] [--k 4] [--out docs/service.png]

Serves the indexes (default: the SciFact BM25 and MiniLM indexes that scripts/bench_service.py
builds under $RETRIEVER_BENCH_WORK) with ``retriever serve``, opens ``/?q=...`` in headless
Chromium (tests/browser.py), waits until the hits are rendered and saves the window.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_service import Server  # noqa: E402
from browser import Browser  # noqa: E402


def main() -> int:
    work = Path(os.environ.get("RETRIEVER_BENCH_WORK", "/tmp/retriever-bench")) / "service-scifact"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, action="append", help="an index to serve (repeat); the last is shown")
    ap.add_argument("--query", default="vitamin D supplementation and bone fractures in older adults")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "service.png")
    args = ap.parse_args()
    indexes = args.index or [work / "bm25", work / "minilm"]
    for path in indexes:
        if not (path / "manifest.json").is_file():
            print(f"{path}: no index there (scripts/bench_service.py builds the default ones)", file=sys.stderr)
            return 2
    server = Server(indexes, [], Path(os.environ.get("TMPDIR", "/tmp")) / "retriever-screenshot-server.log")
    try:
        with Browser() as browser:
            query = urlencode({"q": args.query, "k": args.k, "index": indexes[-1].name})
            browser.open(f"http://127.0.0.1:{server.port}/?{query}")
            browser.wait_for("#hits[data-state=done]")
            errors = browser.errors()
            if errors:
                print(f"the page logged errors: {errors}", file=sys.stderr)
                return 1
            browser.screenshot(args.out)
    finally:
        server.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

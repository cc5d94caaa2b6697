"""Take the screenshot of the HTML leaderboard that the README shows (docs/leaderboard.png).

    python scripts/leaderboard_screenshot.py [--page docs/leaderboard/leaderboard.html] [--out docs/leaderboard.png]

Opens the self-contained page from disk in headless Chromium (tests/browser.py), sorts the
nDCG@10 column of the first dataset best first (as a reader would), and saves the window.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import Browser  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--page", type=Path, default=ROOT / "docs" / "leaderboard" / "leaderboard.html")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "leaderboard.png")
    args = ap.parse_args()
    if not args.page.is_file():
        print(f"{args.page}: no leaderboard page (retriever beir writes one)", file=sys.stderr)
        return 2
    browser = Browser()
    try:
        browser.open(args.page.resolve().as_uri())
        browser.wait_for("table.leaderboard tr.run")
        browser.driver.find_element("css selector", "table.leaderboard th[data-sort='num']").click()
        browser.driver.save_screenshot(str(args.out))
    finally:
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SPLADE document encoding: ours against the plain computation, same model, batch and threads.

    python scripts/bench_splade_encode.py [--model splade-tiny] [--docs 1000] [--batch-size 32]

The plain way: full MLM logits for the padded batch, log1p(relu(.)), multiply by the attention
mask, max over tokens (in corpus order). Ours: ``SpladeEncoder.encode_documents``. Each runs in
its own interpreter so its peak resident memory is its own; vectors are compared afterwards.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_sparse import peak_rss_mb  # noqa: E402


def run_child(method: str, args, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(out), "--model", args.model, "--docs",
           str(args.docs), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
           "--dataset", str(args.dataset), "--max-length", str(args.max_length)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def child(method: str, out: Path, args) -> None:
    import torch

    from indexing.corpus import iter_corpus
    from retriever.encoders.splade import SpladeEncoder, SpladeSettings
    from indexing.corpus import doc_text

    torch.set_num_threads(args.threads)
    texts = [doc_text(d) for d in islice(iter_corpus(args.dataset), args.docs)]
    enc = SpladeEncoder(args.model, settings=SpladeSettings(doc_max_length=args.max_length),
                        batch_size=args.batch_size, device="cpu")
    base_rss = peak_rss_mb()
    start = time.perf_counter()
    if method == "plain":
        dense = np.concatenate([enc.encode_plain(texts[i : i + args.batch_size], args.max_length).numpy()
                                for i in range(0, len(texts), args.batch_size)])
    else:
        dense = np.zeros((len(texts), enc.vocab_size), dtype=np.float32)
        for row, (ids, w) in enumerate(enc.encode_documents(texts)):
            dense[row, ids] = w
    secs = time.perf_counter() - start
    np.save(out, dense)
    print(json.dumps({"docs_per_s": len(texts) / secs, "seconds": secs, "model_loaded_rss_mb": base_rss,
                      "peak_rss_mb": peak_rss_mb()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "OUT"))
    ap.add_argument("--model", default="splade-tiny")
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/beir/scifact")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        plain = run_child("plain", args, Path(tmp) / "plain.npy")
        ours = run_child("ours", args, Path(tmp) / "ours.npy")
        diff = float(np.abs(np.load(Path(tmp) / "plain.npy") - np.load(Path(tmp) / "ours.npy")).max())
    print(f"SPLADE encoding, {args.docs} SciFact documents, model {args.model}, max length "
          f"{args.max_length}, batch {args.batch_size}, {args.threads} threads, CPU")
    print("| method | docs/s | peak RSS (MB) | RSS after model load (MB) |")
    print("|---|--:|--:|--:|")
    for name, r in (("plain (full logits)", plain), ("ours", ours)):
        print(f"| {name} | {r['docs_per_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['model_loaded_rss_mb']:.0f} |")
    print(f"speed-up ours / plain = {ours['docs_per_s'] / plain['docs_per_s']:.2f}; "
          f"max |difference| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

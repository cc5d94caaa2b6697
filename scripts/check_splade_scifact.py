"""SPLADE-tiny on SciFact: float impacts vs uint16 impacts vs the textbook formula.

    python scripts/check_splade_scifact.py [--dataset DIR] [--plain-docs N]

- float: our encoder's document and query vectors, exact float dot products (scipy);
- uint16: the same through our impact index (round(weight * 100));
- plain: the textbook computation (full logits, log1p(relu), mask, max) for the first
  --plain-docs documents, compared vector by vector with ours (max |difference|).
Document vectors are cached in --work (shared with bench_sparse.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.beir import BeirDataset  # noqa: E402

from indexing.corpus import doc_text, iter_corpus
from eval.metrics import evaluate  # noqa: E402
from retriever.encoders.splade import SpladeEncoder  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/beir/scifact")
    ap.add_argument("--model", default="splade-tiny")
    ap.add_argument("--work", type=Path, default=Path("/tmp/retriever-bench"))
    ap.add_argument("--plain-docs", type=int, default=200)
    args = ap.parse_args()
    import scipy.sparse as sp

    ds = BeirDataset(args.dataset)
    qrels, queries = ds.qrels("test"), ds.split_queries("test")
    qids = list(queries)
    docs = list(iter_corpus(args.dataset))
    enc = SpladeEncoder(args.model, device="cpu")
    cache = args.work / "splade-scifact-docs.npz"
    if cache.exists():
        z = np.load(cache)
        ids, w, bounds = z["ids"], z["w"], z["bounds"]  # each npz access reads the array again
        vecs = [(ids[a:b], w[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    else:
        vecs = enc.encode_documents([doc_text(d) for d in docs], progress=True)
    V = enc.vocab_size

    def matrix(vectors, quantise: bool):
        rows = np.concatenate([np.full(len(i), r) for r, (i, _) in enumerate(vectors)])
        cols = np.concatenate([i for i, _ in vectors])
        vals = np.concatenate([w for _, w in vectors]).astype(np.float64)
        if quantise:
            vals = np.rint(vals * 100) / 100
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(vectors), V))

    q_vecs = enc.encode_queries([queries[q] for q in qids])
    Q = matrix(q_vecs, False)
    results = {}
    for name, quant in (("float", False), ("uint16 (scale 100)", True)):
        S = (Q @ matrix(vecs, quant).T).toarray()
        run = {}
        for qid, row in zip(qids, S):
            cand = np.flatnonzero(row > 0)
            top = cand[np.lexsort((cand, -row[cand]))][:1000]
            run[qid] = {docs[i].docid: float(row[i]) for i in top}
        results[name] = evaluate(qrels, run, ["ndcg@10", "recall@100"]).metrics
    texts = [doc_text(d) for d in docs[: args.plain_docs]]
    plain = np.concatenate([enc.encode_plain(texts[i : i + 32], 256).numpy() for i in range(0, len(texts), 32)])
    ours = np.zeros_like(plain)
    for r, (i, w) in enumerate(vecs[: args.plain_docs]):
        ours[r, i] = w
    print(f"SPLADE-tiny, SciFact test ({len(qids)} queries), exact dot products")
    print("| impacts | nDCG@10 | Recall@100 |\n|---|--:|--:|")
    for name, m in results.items():
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} |")
    drop = results["float"]["ndcg@10"] - results["uint16 (scale 100)"]["ndcg@10"]
    print(f"quantisation drop: {drop:+.4f} nDCG@10")
    print(f"ours vs textbook formula on the first {args.plain_docs} documents: "
          f"max |difference| = {np.abs(ours - plain).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

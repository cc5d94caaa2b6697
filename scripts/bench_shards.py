"""Sharded indexes (issue 15): sharded == unsharded, build throughput, search at scale.

    python scripts/bench_shards.py [--dataset DIR] [--sections equal,throughput,scale]
                                   [--docs 1000000] [--scale-docs 10000000] [--scale-queries 500]
                                   [--out docs/bench_shards.json]

Sections:
  equal       SciFact, --shards 3 built on a local Ray cluster (ray.init(num_cpus=2)) with 2
              actors: BM25 flat and multifield, SPLADE-tiny and MiniLM Flat against the
              unsharded index (top-1000 of every test query: doc ids, scores, nDCG@10), and the
              same sharded index searched by Ray actors; MiniLM IVF-PQ in 3 shards against one
              shard built with the same sample (the same trained quantizer, checked byte for byte):
              top-10 agreement. Build times of the MiniLM Flat indexes give the dense encoding
              throughput of 1 process against 2 Ray actors.
  throughput  BM25 on --docs synthetic documents (Zipf pseudo-words, scripts/synthetic.py):
              unsharded (one process), and 2 shards with 1 and with 2 worker processes; where the
              time goes (the manifest's build seconds: the shared phase analyses every document
              and merges the statistics, the shards weigh and write, then assembly).
  scale       --scale-docs synthetic sparse vectors (~32 terms/doc over 30,522 tokens) in 1 shard
              and in 4 shards: search q/s (--scale-queries queries of ~25 terms, k=1000, term-weight
              queries) and peak memory (VmHWM) of the searching process, each in a fresh
              process; the 4 shards also on 2 Ray actors (peak memory per actor).

Work files go to $RETRIEVER_BENCH_WORK (default /tmp/retriever-bench); indexes already built
there are reused (their recorded build times are kept). The load average is recorded with
every section (this machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_sparse import load, peak_rss_mb  # noqa: E402

K = 1000


def in_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(a: dict, b: dict, tol: float = 1e-5) -> dict:
    """Per query: same doc ids in the same order; largest score difference; queries whose lists
    differ only among documents whose scores are within ``tol`` (floating-point near-ties)."""
    same = near = 0
    worst = 0.0
    for q in a:
        ids_a, ids_b = list(a[q]), list(b[q])
        if ids_a == ids_b:
            same += 1
            diffs = [abs(a[q][d] - b[q][d]) for d in ids_a]
        else:
            common = set(ids_a) & set(b[q])
            diffs = [abs(a[q][d] - b[q][d]) for d in common]
            sa, sb = np.array(list(a[q].values())), np.array(list(b[q].values()))
            if len(sa) == len(sb) and np.abs(sa - sb).max() <= tol:
                near += 1  # same scores rank by rank: only the order of near-equal documents differs
        worst = max(worst, max(diffs, default=0.0))
    return {"queries": len(a), "same_ids_in_order": same, "differ_only_in_near_ties": near,
            "max_abs_score_diff": worst}


def ndcg10(qrels, run) -> float:
    from eval.metrics import evaluate

    return round(evaluate(qrels, run, ["ndcg@10"]).metrics["ndcg@10"], 4)


def build_or_load(path: Path, record: dict, **options):
    """Build (timed) unless a complete index is there; returns the loaded index."""
    from retriever import Retriever

    if (path / "manifest.json").is_file():
        return Retriever.load(path, verify=False)
    t = time.perf_counter()
    r = Retriever.build(options.pop("corpus"), path, overwrite=True, **options)
    record["build_s"] = round(time.perf_counter() - t, 1)
    record["build_load"] = load()
    return r


def equal(args, report: dict) -> None:
    import ray

    from eval.beir import BeirDataset
    from retriever import Retriever

    work = Path(args.work) / "shards-equal"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ds = BeirDataset(args.dataset)
    qs, qrels = ds.split_queries("test"), ds.qrels("test")
    section = report.setdefault("equal", {})
    section["load_before"] = load()
    configs = {"bm25-flat": dict(kind="bm25", fields="flat"),
               "bm25-multifield": dict(kind="bm25", fields="multifield"),
               "splade-tiny": dict(kind="sparse", model="splade-tiny", device="cpu"),
               # encoding blocks of 1,024 documents (both sides): 3 shards of whole blocks of SciFact
               "minilm-flat": dict(kind="dense", model="minilm", faiss="Flat", device="cpu", encode_block=1024)}
    for name, opts in configs.items():
        if args.only and name not in args.only:
            continue
        row = section.setdefault(name, {})
        row.setdefault("unsharded", {})
        row.setdefault("sharded", {})
        one = build_or_load(work / f"{name}-1", row["unsharded"], corpus=args.dataset, **opts)
        three = build_or_load(work / f"{name}-3", row["sharded"], corpus=args.dataset, shards=3, workers=2,
                              ray="auto", **opts)
        row["sharded"]["build_seconds"] = three.manifest["build"]["seconds"]
        run_one, run_three = one.search_batch(qs, k=K), three.search_batch(qs, k=K)
        row["top1000"] = compare(run_one, run_three)
        row["ndcg@10"] = {"unsharded": ndcg10(qrels, run_one), "sharded": ndcg10(qrels, run_three)}
        actors = Retriever.load(work / f"{name}-3", verify=False, ray="auto")
        row["ray_actors_vs_in_process"] = compare(run_three, actors.search_batch(qs, k=K), tol=0.0)
        for a in actors.searcher.actors:
            ray.kill(a)
        print(name, json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")  # kept if a later row fails
    if not args.only or "minilm-ivfpq" in args.only:
        row = section.setdefault("minilm-ivfpq", {"spec": "IVF64,PQ48", "train_size": 2560})
        opts = dict(kind="dense", model="minilm", faiss="IVF64,PQ48", train_size=2560, device="cpu", encode_block=1024)
        one = build_or_load(work / "ivfpq-1", row.setdefault("one_shard", {}), corpus=args.dataset, shards=1,
                            workers=1, **opts)
        three = build_or_load(work / "ivfpq-3", row.setdefault("sharded", {}), corpus=args.dataset, shards=3,
                              workers=2, ray="auto", **opts)
        q1 = (work / "ivfpq-1" / "shared" / "quantizer.faiss").read_bytes()
        q3 = (work / "ivfpq-3" / "shared" / "quantizer.faiss").read_bytes()
        row["same_quantizer_bytes"] = q1 == q3
        alone = Retriever.load(work / "ivfpq-1" / "shards" / "000", verify=False)  # one complete index
        a, b = alone.search_batch(qs, k=10), three.search_batch(qs, k=10)
        row["top10_same_set"] = round(sum(set(a[q]) == set(b[q]) for q in qs) / len(qs), 4)
        row["top10_same_order"] = round(sum(list(a[q]) == list(b[q]) for q in qs) / len(qs), 4)
        row["ndcg@10"] = {"one_shard": ndcg10(qrels, alone.search_batch(qs, k=K)),
                          "sharded": ndcg10(qrels, three.search_batch(qs, k=K))}
        print("minilm-ivfpq", json.dumps(row), flush=True)
    section["load_after"] = load()
    ray.shutdown()


def throughput(args, report: dict) -> None:
    from scripts.synthetic import write_text_corpus

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"synth-{args.docs}.jsonl"
    if not corpus.exists():
        write_text_corpus(corpus, args.docs)
    section = report.setdefault("throughput", {"docs": args.docs})
    for name, opts in (("unsharded", {}), ("2 shards, 1 worker", {"shards": 2, "workers": 1}),
                       ("2 shards, 2 workers", {"shards": 2, "workers": 2})):
        out = work / f"synth-{args.docs}-bm25-{name.replace(' ', '').replace(',', '-')}"
        before = load()
        row = in_child("build", str(corpus), str(out), json.dumps(opts))
        row["load_before"], row["load_after"] = before, load()
        section[name] = row
        print(name, json.dumps(row), flush=True)
    one = section["2 shards, 1 worker"]["seconds"]
    two = section["2 shards, 2 workers"]["seconds"]
    section["speedup_2_workers_vs_1"] = round(one / two, 2)
    section["sharded_2_workers_vs_unsharded"] = round(section["unsharded"]["seconds"] / two, 2)


def _scale_docs(n: int, seed: int, start: int):
    """Docs ``start``.. of a seeded stream of synthetic sparse vectors (term strings t<id>)."""
    from indexing.corpus import Doc
    from scripts.synthetic import sparse_vectors

    names = np.array([f"t{i}" for i in range(30_522)], dtype=object)
    for i, (ids, weights) in enumerate(sparse_vectors(n, mean_terms=32, seed=seed)):
        yield Doc(f"d{start + i:09d}", "", "", dict(zip(names[ids].tolist(), weights.tolist())))


def scale(args, report: dict) -> None:
    """Builds the 1-shard index and the 4 shards (2 processes at a time) from the same stream,
    assembles the 4 as a sharded index, then searches each in a fresh process."""
    work = Path(args.work) / f"scale-{args.scale_docs}"
    work.mkdir(parents=True, exist_ok=True)
    section = report.setdefault("scale", {"docs": args.scale_docs, "mean_terms": 32})
    section["queries"] = args.scale_queries
    per = args.scale_docs // 4
    if not (work / "one" / "manifest.json").is_file():
        t = time.perf_counter()
        section["build_one"] = in_child("scale-build", str(work / "one"), "0", str(args.scale_docs))
        section["build_one"]["wall_s"] = round(time.perf_counter() - t, 1)
    if not (work / "four" / "manifest.json").is_file():
        t = time.perf_counter()
        procs = []
        for i in range(4):  # the shards of the same stream: document i is the same in both
            part = work / "four.partial" / "shards" / f"{i:03d}"
            if (part / "manifest.json").is_file():
                continue
            procs.append(subprocess.Popen([sys.executable, __file__, "--child", "scale-build", str(part),
                                           str(i * per), str(per)], stdout=subprocess.PIPE))
            if len(procs) == 2:
                [p.wait() for p in procs]
                procs = []
        [p.wait() for p in procs]
        in_child("scale-assemble", str(work / "four"), "4")
        section["build_four_wall_s_2_processes"] = round(time.perf_counter() - t, 1)
    for name in ("one", "four"):
        before = load()
        section[f"search_{name}"] = {**in_child("scale-search", str(work / name), "", str(args.scale_queries)),
                                     "load_before": before,
                                     "load_after": load()}
        print(name, json.dumps(section[f"search_{name}"]), flush=True)
    before = load()
    section["search_four_ray_2_actors"] = {**in_child("scale-search", str(work / "four"), "ray", str(args.scale_queries)),
                                           "load_before": before, "load_after": load()}
    print("ray", json.dumps(section["search_four_ray_2_actors"]), flush=True)


def child(argv: list[str]) -> None:
    step = argv[0]
    if step == "build":
        from retriever import Retriever

        corpus, out, opts = argv[1], argv[2], json.loads(argv[3])
        t = time.perf_counter()
        r = Retriever.build(corpus, out, kind="bm25", overwrite=True, store_docs=False, **opts)
        row = {"seconds": round(time.perf_counter() - t, 1), "peak_rss_mb_driver": round(peak_rss_mb())}
        if "build" in r.manifest:
            row["phases"] = r.manifest["build"]["seconds"]
        print(json.dumps(row))
    elif step == "scale-build":
        from indexing.manifest import IndexWriter
        from retriever import kinds

        out, start, n = Path(argv[1]), int(argv[2]), int(argv[3])
        kind = kinds.get("sparse")
        t = time.perf_counter()
        with IndexWriter(out, overwrite=True) as w:
            w.finish(kinds.write_kind(kind, _scale_docs(n, seed=start + 1, start=start), w,
                                      kind.make_settings(vectors=True), store_docs=False))
        print(json.dumps({"seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": round(peak_rss_mb())}))
    elif step == "scale-assemble":
        import dataclasses

        from indexing.manifest import IndexWriter
        from retriever import kinds
        from retriever.shards.build import assemble

        out, n = Path(argv[1]), int(argv[2])
        work = out.with_name(out.name + ".partial")
        settings = dataclasses.asdict(kinds.get("sparse").make_settings(vectors=True))
        plan = {"kind": "sparse", "settings": settings, "corpus": {"path": None}, "shards": n}
        with IndexWriter(out, overwrite=True) as w:
            w.finish(assemble(w, work, plan, {}), sealed=("shards",))
        print(json.dumps({"assembled": n}))
    elif step == "scale-search":
        from retriever import Retriever
        from scripts.synthetic import sparse_queries

        path, mode, n_queries = argv[1], argv[2], int(argv[3])
        queries = [dict((f"t{t}", float(x)) for t, x in zip(ids, w)) for ids, w in sparse_queries(n_queries)]
        t = time.perf_counter()
        r = Retriever.load(path, verify=False, **({"ray": "local", "groups": 2} if mode == "ray" else {}))
        load_s = time.perf_counter() - t
        r.search_weights(queries[0], k=K)  # warm-up: compiled kernels
        t = time.perf_counter()
        for q in queries:
            r.search_weights(q, k=K)
        secs = time.perf_counter() - t
        row = {"qps": round(len(queries) / secs, 1), "load_s": round(load_s, 1),
               "peak_rss_mb": round(peak_rss_mb()), "docs": len(r)}
        if mode == "ray":
            import ray

            row["actors_peak_rss_mb"] = [round(m) for m in ray.get([a.memory.remote() for a in r.searcher.actors])]
        print(json.dumps(row))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--sections", default="equal,throughput,scale")
    ap.add_argument("--only", default="", help="equal: only these configurations (comma-separated)")
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--scale-docs", type=int, default=10_000_000)
    ap.add_argument("--scale-queries", type=int, default=500)
    ap.add_argument("--work", default=os.environ.get("RETRIEVER_BENCH_WORK", "/tmp/retriever-bench"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_shards.json"))
    args = ap.parse_args()
    args.only = [x for x in args.only.split(",") if x]
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    for section in args.sections.split(","):
        {"equal": equal, "throughput": throughput, "scale": scale}[section](args, report)
        out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

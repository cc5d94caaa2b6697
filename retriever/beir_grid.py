"""BEIR leaderboard runs: every configuration over every dataset, cached and resumable.

``runs.yaml`` maps a configuration name to the options of ``retriever index`` (flag names with
underscores), e.g. ``bm25-flat: {kind: bm25, fields: flat}``. For each (dataset, config) cell
the grid builds the index (reused while the options and the corpus are unchanged), searches the
split, evaluates, and saves the cell's result; a rerun skips finished cells and rebuilt nothing
that is still valid. A missing dataset or a failing configuration becomes a ``missing`` /
``failed`` cell and the rest of the grid goes on.

:func:`reproduce_commands` gives, for every cell, the ``retriever index`` and ``retriever eval``
command lines that redo it by hand (the HTML leaderboard shows them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from eval.beir import BeirDataset
from eval.metrics import DEFAULT_METRICS, evaluate
from eval.trec import write_run
from indexing.io import atomic_write_json, atomic_write_text, dir_size
from retriever import kinds

GRID_VERSION = 1


def _unique_keys_loader():
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        """YAML's safe loader, refusing a key given twice in one mapping (the last one silently won:
        two configurations of one name ran as one)."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeys


def load_config(path: str | os.PathLike) -> dict[str, dict]:
    """Configurations from YAML: {name: {option: value}}; names and options checked."""
    import yaml

    p = Path(path)
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_unique_keys_loader())  # noqa: S506 (safe)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        detail = getattr(e, "problem", None) or " ".join(str(e).split())  # (one line)
        raise ValueError(f"{p}{f':{line + 1}' if line is not None else ''}: not valid YAML ({detail})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{p}: expected a mapping of configuration names to index options")
    for name, options in data.items():
        try:
            plain_name(str(name), "a configuration name", parts=1)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
        if not isinstance(options, dict):
            raise ValueError(f"{p}: configuration {name!r} must map option names to values")
        bad = [k for k in options if not isinstance(k, str) or "-" in k]
        if bad:
            raise ValueError(f"{p}: configuration {name!r}: option names use underscores, got {bad}")
    return {str(k): dict(v) for k, v in data.items()}


def plain_name(value: str, what: str, parts: int | None = None) -> str:
    """``value`` checked to name a place under OUT (the grid writes ``OUT/indexes/DATASET/NAME``
    with overwrite): relative, no ``.``/``..`` or empty part, no backslash or control character;
    at most ``parts`` parts (a configuration name is one; a dataset may be ``cqadupstack/FORUM``)."""
    pieces = value.split("/")
    if (not value or value.startswith("/") or any(p in ("", ".", "..") for p in pieces)
            or any(c == "\\" or ord(c) < 32 or c == "\x7f" for c in value)
            or (parts is not None and len(pieces) > parts)):
        shape = "one plain name (no '/')" if parts == 1 else "a relative name"
        raise ValueError(f"{what} names a directory under OUT: it must be {shape}, without '.', '..', empty "
                         f"parts, backslashes or control characters; got {value!r}")
    return value


def _corpus_key(ds: BeirDataset) -> dict:
    st = ds.corpus_path.stat()
    return {"corpus": str(ds.corpus_path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _file_key(path: Path) -> dict:
    """What identifies a version of an input file: its path, size and modification time."""
    try:
        st = path.stat()
    except OSError:
        return {"path": str(path), "missing": True}
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dataset_dir(root: Path | None, dataset: str) -> Path:
    """Where a dataset of the grid is: ``root/dataset`` when it is there, else (a name such as
    ``beir/scifact``) the directory ``eval.datasets`` materialises; DataError when neither."""
    from eval.datasets import is_name, resolve
    from indexing.errors import DataError

    if root is not None and (root / dataset / "corpus.jsonl").is_file():
        return root / dataset
    if is_name(dataset):
        return resolve(dataset)
    where = root / dataset if root is not None else Path(dataset)
    raise DataError("no BEIR dataset here (nor a dataset name: see `retriever datasets list`)", path=where)


def _record_in_cards(options: dict, dataset: str, split: str, metrics: dict, index_dir: Path) -> None:
    """Add the cell's metrics to the card of each trained model the configuration names."""
    from training.model_card import add_results

    for key in ("model", "dense_model", "sparse_model"):
        path = options.get(key)
        if isinstance(path, str) and (Path(path) / "training_config.json").is_file():
            add_results(path, dataset, split, metrics, str(index_dir))


def run_cell(root: Path | None, dataset: str, name: str, options: dict, out: Path, split: str, k: int,
             metrics: tuple[str, ...], model_cards: bool = False, ray: str | None = None,
             replicas: int = 1) -> dict:
    """One (dataset, config) cell: index (cached), search, evaluate; never raises. With
    ``model_cards``, the metrics are also recorded in the card of every trained model the
    configuration names (``retriever train`` output directories). With ``ray``, sharded
    configurations (``shards: N``) are built and searched on that Ray cluster."""
    from indexing.errors import DataError
    from retriever.api import Retriever

    cell = {"config": name, "dataset": dataset, "status": "ok", "error": None, "metrics": {},
            "wall_s": None, "index_bytes": None, "latency_ms": None, "cached": False}
    try:
        ds_dir = dataset_dir(root, dataset)
    except DataError as e:
        return {**cell, "status": "missing", "error": str(e)}
    start = time.perf_counter()
    try:
        ds = BeirDataset(ds_dir)
        index_key = _digest({"v": GRID_VERSION, "options": options, **_corpus_key(ds)})
        # a result stands for the queries and judgements it was computed with, too (an edited qrels
        # file showed the old nDCG as cached)
        result_key = _digest({"index": index_key, "split": split, "k": k, "metrics": metrics,
                              "queries": _file_key(ds.queries_path),
                              "qrels": _file_key(ds.root / "qrels" / f"{split}.tsv")})
        cell_dir = out / "cells" / dataset / name
        result_file = cell_dir / "result.json"
        if result_file.is_file():
            saved = json.loads(result_file.read_text(encoding="utf-8"))
            if saved.get("key") == result_key:
                if model_cards:
                    _record_in_cards(options, dataset, split, saved["cell"]["metrics"], out / "indexes" / dataset / name)
                return {**saved["cell"], "cached": True}
        index_dir = out / "indexes" / dataset / name
        key_file = out / "indexes" / dataset / f"{name}.key"
        opts = dict(options)
        kind = opts.pop("kind", "bm25")
        if key_file.is_file() and key_file.read_text() == index_key and (index_dir / "manifest.json").is_file():
            r = Retriever.load(index_dir, verify=False)
        else:
            on_ray = {"ray": ray} if ray is not None and opts.get("shards") else {}
            # the old key goes first: a crash after the new index is swapped in, before its key is
            # written, leaves no key (rebuilt next time), never the old key on the new index
            key_file.unlink(missing_ok=True)
            r = Retriever.build(ds_dir, index_dir, kind=kind, overwrite=True, store_docs=False, **on_ray, **opts)
            atomic_write_text(key_file, index_key)
        if ray is not None and r.manifest.get("backend") == "sharded":
            r = Retriever.load(index_dir, verify=False, ray=ray, replicas=replicas)
        qrels = ds.qrels(split)
        queries = ds.split_queries(split)
        r.search_batch(dict(list(queries.items())[:1]), k=k)  # warm-up: compiled kernels, caches
        t0 = time.perf_counter()
        run = r.search_batch(queries, k=k)
        search_s = time.perf_counter() - t0
        result = evaluate(qrels, run, list(metrics), per_query=True)
        cell_dir.mkdir(parents=True, exist_ok=True)
        write_run(run, out / "runs" / f"{dataset.replace('/', '__')}__{name}.trec", tag=name)
        atomic_write_text(cell_dir / "per_query.json", json.dumps(result.per_query, indent=1) + "\n")
        cell.update(metrics=result.metrics, index_bytes=dir_size(index_dir),
                    latency_ms=1000 * search_s / max(len(queries), 1),
                    wall_s=time.perf_counter() - start, num_queries=result.num_queries)
        atomic_write_json(result_file, {"key": result_key, "cell": cell}, indent=1)
        if model_cards:
            _record_in_cards(options, dataset, split, result.metrics, index_dir)
        return cell
    except Exception as e:  # a failing configuration must not stop the grid
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        return {**cell, "status": "failed", "error": detail, "wall_s": time.perf_counter() - start}


def run_grid(root: str | os.PathLike | None, datasets: list[str], configs: dict[str, dict],
             out: str | os.PathLike, split: str = "test", k: int = 1000,
             metrics: tuple[str, ...] = DEFAULT_METRICS, progress: bool = True,
             model_cards: bool = False, ray: str | None = None, replicas: int = 1) -> list[dict]:
    root, out = (Path(root) if root is not None else None), Path(out)
    for dataset in datasets:
        plain_name(dataset.removeprefix("irds:"), "a dataset name")
    for name in configs:
        plain_name(name, "a configuration name", parts=1)
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(datasets) * len(configs), unit="cell", desc="beir grid")
    for dataset in datasets:
        for name, options in configs.items():
            if bar is not None:
                bar.set_postfix_str(f"{dataset} / {name}")
            cell = run_cell(root, dataset, name, options, out, split, k, metrics, model_cards, ray, replicas)
            cells.append(cell)
            if bar is not None:
                bar.update()
                if cell["status"] != "ok":
                    bar.write(f"{dataset} / {name}: {cell['status']}: {cell['error'].splitlines()[-1]}")
    if bar is not None:
        bar.close()
    return cells


# --------------------------------------------------------------------------- reproduction commands

def _kind_fields(kind: str, backend: str) -> dict[str, kinds.FieldSpec]:
    """{option name: FieldSpec} of the kind's Settings; {} when the kind cannot be loaded."""
    try:
        k = kinds.get(kind, backend)
    except (ValueError, ImportError):
        return {}
    return {spec.name: spec for spec in kinds.fields_of(k.settings)}


def _option_args(name: str, value, spec: kinds.FieldSpec | None) -> list[str]:
    """The ``retriever index`` arguments that set option ``name`` to ``value``.

    The flag is the Settings field's (``--`` + the name with dashes unless the kind overrides
    it). A bool is a bare flag (``--refine``); False is ``--no-FLAG`` for a field that may be
    None (``--normalize/--no-normalize``) and nothing otherwise (the flag's default). A list is
    comma-separated; None is left out (the kind's default).
    """
    flag = spec.flag if spec is not None else "--" + name.replace("_", "-")
    if value is None:
        return []
    if isinstance(value, bool):
        if value:
            return [flag]
        return ["--no-" + flag[2:]] if spec is not None and spec.optional else []
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return [f"{flag}={text}"] if text.startswith("-") else [flag, text]


def index_argv(options: dict, corpus: str | os.PathLike, index_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``retriever index`` argv building what :func:`run_cell` builds for ``options``, and notes.

    Like the grid: kind bm25 unless given, the native backend unless given, no stored document
    text. A note names each option that ``retriever index`` has no flag for (``cli=False``
    fields), which the command therefore leaves at its default.
    """
    opts = dict(options)
    kind = str(opts.pop("kind", "bm25"))
    backend = str(opts.pop("backend", "native"))
    fields = _kind_fields(kind, backend)
    argv = ["retriever", "index", str(corpus), str(index_dir), "--kind", kind]
    if backend != "native":
        argv += ["--backend", backend]
    argv += ["--overwrite", "--no-store-docs"]
    notes = []
    for name, value in opts.items():
        spec = fields.get(name)
        if spec is not None and not spec.cli:
            notes.append(f"{name}={value!r} has no retriever index flag; the command uses the default")
            continue
        argv += _option_args(name, value, spec)
    return argv, notes


def eval_argv(index_dir: str | os.PathLike, dataset_dir: str | os.PathLike, split: str, k: int,
              metrics: Sequence[str]) -> list[str]:
    """``retriever eval`` argv that searches ``index_dir`` and scores it as the grid does."""
    return ["retriever", "eval", "--index", str(index_dir), "--dataset", str(dataset_dir),
            "--split", split, "-k", str(k), "--metrics", ",".join(metrics)]


def reproduce_commands(root: str | os.PathLike, datasets: Sequence[str], configs: dict[str, dict],
                       out: str | os.PathLike, split: str = "test", k: int = 1000,
                       metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, dict[str, str]]:
    """{config: {dataset: shell text}}: the commands that redo each cell of :func:`run_grid`
    (a dataset not under ``root`` appears by its name, which the CLI resolves the same way).

    The text is ``# notes`` (if any), then the ``retriever index`` line (into
    ``OUT/reproduce/DATASET/CONFIG``, apart from the grid's cache) and the ``retriever eval``
    line, every argument shell-quoted; paths are as given, so relative ones are relative to the
    directory the grid ran in.
    """
    from eval.datasets import is_name

    commands: dict[str, dict[str, str]] = {}
    for name, options in configs.items():
        commands[name] = {}
        for dataset in datasets:
            under_root = root is not None and ((Path(root) / dataset).is_dir() or not is_name(dataset))
            dataset_dir = Path(root) / dataset if under_root else dataset
            index_dir = Path(out) / "reproduce" / dataset / name
            build, notes = index_argv(options, dataset_dir, index_dir)
            lines = [f"# {note}" for note in notes]
            lines += [shlex.join(build), shlex.join(eval_argv(index_dir, dataset_dir, split, k, metrics))]
            commands[name][dataset] = "\n".join(lines)
    return commands

"""The house rules of docs/ARCHITECTURE.md: layers import only downwards, a new index kind is
added through the registry alone, and every kind's settings drive the CLI and the manifest."""

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pytest
from click.testing import CliRunner

from indexing.corpus import Doc
from indexing.manifest import IndexWriter
from retriever import Retriever, cli, kinds
from retriever.kinds import Kind, check_settings, option

ROOT = Path(__file__).resolve().parent.parent

# group -> the groups it may import (its own included); most specific prefix wins
ALLOWED = {
    "indexing": {"indexing"},
    "eval": {"eval", "indexing"},
    "retriever.encoders": {"retriever.encoders", "indexing"},
    "training": {"training", "retriever.encoders", "indexing", "eval"},
    "retriever.kinds": {"retriever.kinds", "retriever.encoders", "indexing", "eval"},
    "retriever.shards": {"retriever.shards", "retriever.kinds", "retriever.encoders", "indexing", "eval"},
    "retriever.api": {"retriever.api", "retriever.shards", "retriever.kinds", "retriever.encoders", "indexing", "eval"},
    "retriever.beir_grid": {"retriever.beir_grid", "retriever.api", "retriever.kinds", "training", "indexing", "eval"},
    "retriever.service": {"retriever.service", "retriever.api", "retriever.kinds", "indexing", "eval"},
    "retriever.cli": {"retriever.cli", "retriever.beir_grid", "retriever.service", "retriever.api", "retriever.shards",
                      "retriever.kinds", "retriever.encoders", "training", "indexing", "eval"},
}
ALIASES = {"retriever": "retriever.api"}  # the package exports Retriever (the API)


def group_of(module: str) -> str | None:
    module = ALIASES.get(module, module)
    best = None
    for group in ALLOWED:
        if module == group or module.startswith(group + "."):
            best = group if best is None or len(group) > len(best) else best
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from retriever import kinds` imports retriever.kinds
                sub = f"{node.module}.{alias.name}"
                yield node.lineno, sub if is_module(sub) else node.module


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(files) -> list[str]:
    found = []
    for path in files:
        mine = group_of(module_name(path))
        if mine is None:
            continue
        for line, target in imports(path):
            other = group_of(target)
            if other is not None and other not in ALLOWED[mine]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {target} ({other})")
    return found


def package_files():
    for top in ("retriever", "indexing", "eval", "training"):
        yield from sorted((ROOT / top).rglob("*.py"))


def test_layers_import_only_downwards():
    assert violations(package_files()) == []


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """A lower layer importing a higher one is reported (the check can fail)."""
    bad = ROOT / "indexing" / "_upward_probe.py"
    text = "from retriever.api import Retriever\nfrom training.trainer import Trainer\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: text if self == bad else
                        Path.read_bytes(self).decode(encoding or "utf-8"))
    found = violations([bad])
    assert len(found) == 2 and "indexing imports retriever.api" in found[0]


def test_nothing_outside_the_cli_imports_it():
    for path in package_files():
        if module_name(path).startswith("retriever.cli"):
            continue
        assert not [t for _, t in imports(path) if t.startswith("retriever.cli")], path


# -- a toy kind, added through the registry alone ---------------------------------------------

@dataclass(frozen=True)
class ToySettings:
    mode: Literal["length", "vowels"] = option("length", "score a document by its length or its vowels")
    scale: float = option(1.0, "multiply every score", min=0, min_open=True)

    def __post_init__(self) -> None:
        check_settings(self)


class ToySearcher:
    def __init__(self, scores: np.ndarray, docids: list[str]) -> None:
        self.scores, self.docids = scores, docids

    def search(self, text, k=10):
        from indexing.results import Hit

        order = np.argsort(-self.scores, kind="stable")[:k]
        return [Hit(self.docids[i], float(self.scores[i])) for i in order]

    def search_batch(self, queries, k=1000, threads=1):
        return {q: {h.docid: h.score for h in self.search(t, k)} for q, t in queries.items()}


def toy_write(docs: Iterator[Doc], writer: IndexWriter, settings: ToySettings) -> dict:
    score = (lambda d: len(d.text)) if settings.mode == "length" else (lambda d: sum(c in "aeiou" for c in d.text))
    writer.save_array("toy.npy", np.array([score(d) * settings.scale for d in docs], dtype=np.float32))
    return {"toy": {"mode": settings.mode}}


def toy_open(root, manifest, docids):
    return ToySearcher(np.load(Path(root) / "toy.npy"), docids)


@pytest.fixture
def toy_kind():
    kind = kinds.register(Kind("toy", "native", ToySettings, toy_write, toy_open,
                               schema=(("toy", "dict"), ("toy.mode", "str")), help="a test kind"))
    yield kind
    kinds._REGISTERED.pop(("toy", "native"))


def test_a_new_kind_through_the_registry(toy_kind, beir_dir, tmp_path):
    r = Retriever.build(beir_dir, tmp_path / "toyidx", kind="toy", mode="vowels")
    m = json.loads((tmp_path / "toyidx" / "manifest.json").read_text())
    assert m["kind"] == "toy" and m["settings"] == {"mode": "vowels", "scale": 1.0}
    assert m["corpus"]["fingerprint"] and r.doc("d1")["title"] == "Vitamin D and fractures"
    hits = r.search("anything", k=2)
    assert len(hits) == 2 and hits[0].score >= hits[1].score
    with pytest.raises(TypeError, match="accepted: mode, scale"):
        Retriever.build(beir_dir, tmp_path / "t2", kind="toy", k1=1.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        Retriever.build(beir_dir, tmp_path / "t2", kind="toy", scale=0.0)
    res = CliRunner().invoke(cli.main, ["index", str(beir_dir), str(tmp_path / "t3"), "--kind", "toy",
                                        "--mode", "length", "--scale", "2", "--quiet"])
    assert res.exit_code == 0, res.output
    assert Retriever.load(tmp_path / "t3").search("x", k=1)[0].score == 2 * max(
        len(d["text"]) for d in map(json.loads, (beir_dir / "corpus.jsonl").read_text().splitlines()))
    res = CliRunner().invoke(cli.main, ["index", "--kind", "toy", "--help"])
    assert "--mode [length|vowels]" in res.output and "--k1" not in res.output


# -- the CLI from the settings ------------------------------------------------------------------

def test_a_misplaced_flag_is_refused_with_the_kinds_flags(beir_dir, tmp_path):
    res = CliRunner().invoke(cli.main, ["index", str(beir_dir), str(tmp_path / "i"), "--kind", "bm25",
                                        "--faiss", "Flat"])
    assert res.exit_code == 2 and "--faiss does not apply to --kind bm25" in res.output
    assert "--fields, --k1, --b, --stopwords, --stemmer" in res.output
    assert not (tmp_path / "i").exists()


def test_help_for_one_kind_shows_only_its_flags():
    res = CliRunner().invoke(cli.main, ["index", "--kind", "sparse", "--help"])
    assert res.exit_code == 0
    assert "--query-mode" in res.output and "--quantize" in res.output
    assert "--faiss" not in res.output and "--k1" not in res.output and "--dense-model" not in res.output
    everything = CliRunner().invoke(cli.main, ["index", "--help"]).output
    for section in ("--kind bm25", "--kind dense", "--kind sparse", "--kind hybrid"):
        assert section in everything
    assert "[default: 0.9]" in everything  # defaults come from the Settings


def test_settings_are_the_only_defaults():
    """The CLI passes only the flags given; everything else is the Settings default."""
    from retriever.kinds import bm25, sparse
    from retriever.encoders.splade import SpladeSettings

    assert bm25.Settings().k1 == 0.9 and sparse.Settings(model="m").doc_max_length == SpladeSettings().doc_max_length


def test_every_kind_records_settings_and_fingerprint(beir_dir, tmp_path, tiny_mlm, one_torch_thread):
    built = {
        "bm25": Retriever.build(beir_dir, tmp_path / "b"),
        "sparse": Retriever.build(beir_dir, tmp_path / "s", kind="sparse", model=str(tiny_mlm), device="cpu"),
        "dense": Retriever.build(beir_dir, tmp_path / "d", kind="dense", model=str(tiny_mlm), faiss="Flat",
                                 device="cpu"),
        "hybrid": Retriever.build(beir_dir, tmp_path / "h", kind="hybrid", dense_model=str(tiny_mlm),
                                  device="cpu"),
    }
    prints = set()
    for name, r in built.items():
        assert r.manifest["settings"], name
        prints.add(r.manifest["corpus"]["fingerprint"])
    assert len(prints) == 1 and None not in prints
    for part in ("sparse", "dense"):  # the hybrid's components were built from the same one pass
        sub = json.loads((tmp_path / "h" / part / "manifest.json").read_text())
        assert sub["corpus"]["fingerprint"] in prints
    assert built["hybrid"].search_batch({"q": "vitamin"}, k=3)["q"]


@pytest.mark.parametrize("name", ["v1-bm25", "v1-sparse-vectors", "v2-bm25", "v2-sparse-vectors"])
def test_indexes_of_earlier_versions_still_load(name, tmp_path, beir_dir):
    """Same results as an index built today from the same data (tests/data/old-indexes/README.md)."""
    import shutil

    root = tmp_path / name
    shutil.copytree(ROOT / "tests" / "data" / "old-indexes" / name, root)
    old = Retriever.load(root)
    if "bm25" in name:
        fresh = Retriever.build(beir_dir, tmp_path / "fresh", fields="multifield")
        queries = {"a": "vitamin D fractures", "b": "coffee awake", "c": "inverted index"}
        assert old.search_batch(queries, k=6) == fresh.search_batch(queries, k=6)
        assert old.doc("d3") == fresh.doc("d3")
    else:
        vectors = tmp_path / "vectors.jsonl"
        vectors.write_text("".join(json.dumps({"id": f"v{i}", "contents": f"doc {i}", "vector": {"a": i + 1.0, "b": 2.0}})
                                   + "\n" for i in range(4)))
        fresh = Retriever.build(vectors, tmp_path / "fresh", kind="sparse", vectors=True)
        for query in ({"a": 1.0}, {"b": 1.0, "a": 0.5}):
            assert old.search_weights(query, k=4) == fresh.search_weights(query, k=4)

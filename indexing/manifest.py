"""The index directory contract: ``manifest.json``, ``docids.txt`` and checksummed arrays.

Writing. Every index kind writes through :class:`IndexWriter`, which

- takes an advisory lock (``OUT.lock`` beside OUT, ``fcntl.flock``) for the whole build, so a
  second writer of the same OUT fails at once with :class:`IndexBusyError`; the kernel drops
  the lock when a writer dies, even by SIGKILL;
- removes what dead writers left (``OUT.tmp-*``, ``OUT.old-*``) once it holds the lock;
- builds into a temporary sibling directory and swaps it into place with one atomic
  ``renameat2(RENAME_EXCHANGE)`` (two renames where the system lacks it), so a crash at any
  point leaves the old index (or none), never half of one, and OUT never disappears during a
  rebuild.

Reading. :func:`read_manifest` refuses, with an :class:`IndexFormatError` naming the file and the
field, a manifest that is not JSON, of an unknown version, edited by hand (its own checksum,
``manifest_sha256``, no longer matches), missing a field or holding one of the wrong type, or
naming a file outside its directory (absolute paths, ``..``, symlinks). The fields a kind
needs are checked by the kind (``retriever.kinds``). File sizes are always
checked; ``verify`` also recomputes every file's sha256.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import tokenize
import uuid
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np

from indexing.io import atomic_open, load_npy, named_write_failure, save_npy

FORMAT_VERSION = 3
# 1: no manifest checksum; composed hybrids by absolute path (refused). 2: uncompressed (CSR)
# impact postings. 3: impact postings packed (indexing.compress; the manifest's "postings" says so)
READABLE_VERSIONS = (1, 2, 3, 4)
# 4: a dense index with a trained query model inside it (`retriever train query`): readers before
# it would encode queries with the start model and return wrong scores, so they must refuse it
QUERY_MODEL_VERSION = 4
MANIFEST = "manifest.json"
DOCIDS = "docids.txt"
DOCID_ORDER = "docid_order.npy"  # internal ids sorted by external doc id: the tie order of searches
CHECKSUM_KEY = "manifest_sha256"


class IndexFormatError(Exception):
    """An index directory that cannot be used: missing, corrupt, or of another format."""


class IndexBusyError(Exception):
    """Another process is writing the same index directory."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- the writer's lock and the atomic swap --------------------------------------------------------

def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


class WriterLock:
    """An exclusive, non-blocking ``flock`` on ``OUT.lock``, held until :meth:`release`."""

    def __init__(self, out: Path, what: str = "index", wait: bool = False) -> None:
        """``what`` the lock guards (for the message); ``wait``: block until the holder is done
        instead of raising IndexBusyError."""
        self._fd: int | None = None
        self.path = lock_path(out)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                holder = _read_holder(self.path)
                raise IndexBusyError(f"{out}: another process{holder} is writing this {what} "
                                     f"(lock {self.path}); wait for it to finish") from None
            # the file may have been removed (and recreated) by a writer that just released it
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        try:  # who holds it, for the message of a second writer: a full disk only loses that
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __del__(self) -> None:
        self.release()


def _read_holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def is_locked(out: str | os.PathLike) -> bool:
    """Whether a live writer holds OUT's lock (for reports; never blocks)."""
    path = lock_path(Path(out).absolute())
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def leftovers(out: str | os.PathLike) -> list[Path]:
    """Temporary siblings a writer of OUT leaves while it works or when it dies (``OUT.tmp-*``,
    ``OUT.old-*``); without a live writer they are garbage."""
    out = Path(out).absolute()
    if not out.parent.is_dir():
        return []
    pattern = re.compile(re.escape(out.name) + r"\.(tmp|old)-[A-Za-z0-9_]+")
    return sorted(p for p in out.parent.iterdir() if pattern.fullmatch(p.name))


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False when the system cannot."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    fn = getattr(_libc, "renameat2", None) if _libc else None
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # old kernel, or a filesystem without exchange
    raise OSError(err, os.strerror(err), os.fspath(b))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir(new: Path, target: Path) -> None:
    """Put the directory ``new`` at ``target``, replacing what is there in one atomic exchange (two
    renames where the system lacks it: ``target`` is then missing for a moment, never half of
    either), then remove the old directory."""
    new, target = Path(new), Path(target)
    while True:
        if target.exists():
            if _exchange(new, target):  # new now holds the old directory
                shutil.rmtree(new, ignore_errors=True)
            else:
                old = target.with_name(f"{target.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(target, old)
                os.replace(new, target)
                shutil.rmtree(old, ignore_errors=True)
            break
        try:
            os.replace(new, target)
            break
        except OSError as e:  # another (unlocked) writer put a directory there since: swap with it
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    _fsync_dir(target.parent)


class IndexWriter:
    """Writes an index directory atomically, as the only writer of ``out``.

    Use as a context manager; files go into ``self.tmp`` and the whole directory appears at
    ``out`` on successful exit. An existing ``out`` is replaced only when ``overwrite`` is set.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False) -> None:
        self.out = Path(out).absolute()
        if self.out.exists() and not self.out.is_dir():
            raise FileExistsError(f"{self.out} exists and is not an index directory; refusing to replace it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.out)
        try:
            if self.out.exists() and not overwrite:
                raise FileExistsError(f"{self.out} already exists (use --overwrite, or overwrite=True, to replace it)")
            if self.out.exists() and not (self.out / MANIFEST).is_file():
                raise FileExistsError(f"{self.out} exists and is not an index; refusing to replace it")
            for stale in leftovers(self.out):  # we hold the lock: their writers are dead
                shutil.rmtree(stale, ignore_errors=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.out.name}.tmp-", dir=self.out.parent))
        except BaseException:
            self._lock.release()
            raise
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes it private; an index is not

    def path(self, name: str) -> Path:
        return self.tmp / name

    def save_array(self, name: str, array: np.ndarray) -> None:
        """``np.save`` into the index, its size checked (``indexing.io.save_npy``)."""
        save_npy(self.tmp / name, array)

    def write_docids(self, docids: Iterable[str]) -> None:
        with open(self.tmp / DOCIDS, "w", encoding="utf-8", newline="\n") as f:
            for d in docids:
                f.write(d)
                f.write("\n")

    def write_json(self, name: str, obj) -> None:
        with open(self.tmp / name, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)

    def finish(self, manifest: dict, sealed: tuple[str, ...] = ()) -> None:
        """Write the manifest (listing every file with its size and sha256) and swap the new
        directory into place. ``sealed``: sub-directories that are indexes of their own (the
        shards of a sharded index), whose files their own manifests list; ``manifest`` records
        those manifests' checksums instead."""
        if not self.tmp.is_dir():  # removed under us (a writer inside an index rebuilt meanwhile):
            raise IndexFormatError(f"{self.tmp} vanished while it was written; nothing was written "
                                   f"to {self.out} (was {self.out.parent} rebuilt or cleaned meanwhile?)")
        files = {}
        for p in sorted(self.tmp.rglob("*")):
            if p.is_symlink():
                raise IndexFormatError(f"{p}: an index may not hold symbolic links")
            if p.is_file():
                rel = p.relative_to(self.tmp).as_posix()
                if any(rel.startswith(s + "/") for s in sealed):
                    continue
                files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        manifest = {
            "format_version": FORMAT_VERSION,  # a manifest that needs a newer reader says so itself
            **manifest,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        write_manifest(self.tmp, manifest)
        replace_dir(self.tmp, self.out)
        self._lock.release()

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._lock.release()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # a write that failed without naming its file (a full disk: "No space left on device",
        # numpy's "N requested and M written") is named as this index's, space measured first
        failure = named_write_failure(exc, self.out)
        if exc_type is not None or self.tmp.exists():
            self.abort()
        self._lock.release()
        if failure is not None:
            raise failure from exc


# -- the manifest --------------------------------------------------------------------------------

def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own checksum field."""
    body = {k: v for k, v in manifest.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(root: str | os.PathLike, manifest: dict) -> None:
    """Write ``root/manifest.json`` atomically (temp file, fsync, rename) with its checksum."""
    manifest = {**manifest, "format_version": max(FORMAT_VERSION, _version(manifest))}
    manifest[CHECKSUM_KEY] = manifest_digest(manifest)
    with atomic_open(Path(root) / MANIFEST) as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _version(manifest: dict) -> int:
    v = manifest.get("format_version")
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def safe_join(root: str | os.PathLike, name, what: str = "file") -> Path:
    """``root / name`` for a name a manifest gives, refused unless it stays inside ``root``:
    a non-empty relative POSIX path without ``..``, and no symbolic link on the way."""
    root = Path(root)
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise IndexFormatError(f"{root / MANIFEST}: {what} name {name!r} is not a relative path")
    parts = PurePosixPath(name)
    if parts.is_absolute() or any(p in ("..", "") for p in name.split("/")) or name.startswith("./"):
        raise IndexFormatError(f"{root / MANIFEST}: {what} {name!r} points outside the index "
                               "(only relative names inside the directory are allowed)")
    path = root.joinpath(*parts.parts)
    here = root
    for part in parts.parts:
        here = here / part
        if here.is_symlink():
            raise IndexFormatError(f"{root / MANIFEST}: {what} {name!r} goes through a symbolic "
                                   "link; an index may not hold links")
    return path


_NUMBER = (int, float)


def _type_ok(value, kind: str) -> bool:
    if kind == "null" and value is None:
        return True
    if isinstance(value, bool):
        return kind == "bool"
    return {"int": isinstance(value, int), "number": isinstance(value, _NUMBER),
            "str": isinstance(value, str), "dict": isinstance(value, dict),
            "list": isinstance(value, list), "bool": False, "null": False}[kind]


_COMMON = [("format_version", "int"), ("kind", "str"), ("backend", "str"), ("doc_count", "int"),
           ("files", "dict")]
_COMPONENT = [("name", "str"), ("path", "str"), ("kind", "str")]


def check_fields(obj: dict, fields: list[tuple[str, str]], where: str, prefix: str = "") -> None:
    """Each (dotted path, ``int|number|str|bool|dict|list|null`` alternatives joined by ``|``)
    present with its type; the first fault is an IndexFormatError naming the field."""
    for dotted, kinds in fields:
        value, here = obj, obj
        for key in dotted.split("."):
            if not isinstance(here, dict) or key not in here:
                raise IndexFormatError(f"{where}: field {prefix + dotted!r} is missing")
            value = here = here[key]
        if not any(_type_ok(value, k) for k in kinds.split("|")):
            raise IndexFormatError(f"{where}: field {prefix + dotted!r} must be "
                                   f"{kinds.replace('|', ' or ')}, got {json.dumps(value)[:60]}")


def check_schema(manifest, where: str) -> None:
    """The fields every manifest has (the kind checks its own, ``retriever.kinds``): one
    IndexFormatError per missing or mistyped field (the first found)."""
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{where}: expected a JSON object")
    manifest.setdefault("backend", "native")  # manifests before the Lucene backend had none
    check_fields(manifest, _COMMON, where)
    if manifest["doc_count"] < 0:
        raise IndexFormatError(f"{where}: field 'doc_count' must be >= 0")
    for name, info in manifest["files"].items():
        if not isinstance(info, dict):
            raise IndexFormatError(f"{where}: field files[{name!r}] must be dict, got {json.dumps(info)[:60]}")
        check_fields(info, [("bytes", "int"), ("sha256", "str")], where, prefix=f"files[{name!r}].")
    components = manifest.get("components", [])
    if not isinstance(components, list):
        raise IndexFormatError(f"{where}: field 'components' must be list")
    for i, part in enumerate(components):
        if not isinstance(part, dict):
            raise IndexFormatError(f"{where}: components[{i}] must be an object")
        check_fields(part, _COMPONENT, where, prefix=f"components[{i}].")


def read_manifest(path: str | os.PathLike, verify: bool = True) -> dict:
    """Read and check an index manifest; ``verify`` also recomputes file checksums."""
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise IndexFormatError(f"{root}: no such index directory")
    if not mpath.is_file():
        raise IndexFormatError(f"{mpath}: missing; {root} is not a retriever index")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"{mpath}:{e.lineno}: corrupt manifest ({e.msg})") from None
    except UnicodeDecodeError:
        raise IndexFormatError(f"{mpath}: corrupt manifest (not UTF-8)") from None
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{mpath}: corrupt manifest (expected a JSON object)")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise IndexFormatError(
            f"{mpath}: index format version {version!r}, this retriever reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}; rebuild the index with `retriever index`"
        )
    if version >= 2:
        stored = manifest.get(CHECKSUM_KEY)
        if stored != manifest_digest(manifest):
            raise IndexFormatError(f"{mpath}: manifest checksum does not match its contents (edited "
                                   "by hand or corrupt); rebuild the index, or restore the manifest")
    check_schema(manifest, str(mpath))
    for name, info in manifest["files"].items():
        p = safe_join(root, name)
        if not p.is_file():
            raise IndexFormatError(f"{p}: missing (listed in {mpath})")
        if p.stat().st_size != info["bytes"]:
            raise IndexFormatError(
                f"{p}: {p.stat().st_size} bytes, manifest says {info['bytes']}; the index is corrupt"
            )
        if verify and sha256_file(p) != info["sha256"]:
            raise IndexFormatError(f"{p}: checksum does not match {mpath}; the index is corrupt")
    return manifest


def read_docids(path: str | os.PathLike) -> list[str]:
    file = Path(path) / DOCIDS
    try:
        with open(file, encoding="utf-8", newline="\n") as f:
            return f.read().split("\n")[:-1]
    except UnicodeDecodeError:
        raise IndexFormatError(f"{file}: not UTF-8; the index is corrupt") from None


def docid_order(docids: list[str]) -> np.ndarray:
    """Internal ids sorted by their external id (string order = UTF-8 byte order, trec_eval's)."""
    return np.array(sorted(range(len(docids)), key=docids.__getitem__), dtype=np.int32)


def read_docid_order(root: str | os.PathLike, docids: list[str]) -> np.ndarray:
    """The index's ``docid_order.npy`` (checked to be a permutation), or computed from the ids
    for indexes written before it existed."""
    path = Path(root) / DOCID_ORDER
    if not path.is_file():
        return docid_order(docids)
    order = load_array(root, DOCID_ORDER, mmap=False)
    n = len(docids)
    if order.shape != (n,) or order.dtype.kind not in "iu" or (n and (order.min() < 0 or order.max() >= n)) \
            or (n and np.bincount(order, minlength=n).max() != 1):
        raise IndexFormatError(f"{path}: not a permutation of the {n} documents; the index is corrupt")
    return order.astype(np.int32, copy=False)


def load_array(root: str | os.PathLike, name: str, mmap: bool = True) -> np.ndarray:
    path = Path(root) / name
    try:
        return load_npy(path, "r" if mmap else None)
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: missing; the index is incomplete") from None
    except IsADirectoryError:
        raise IndexFormatError(f"{path}: a directory, not an array; the index is corrupt") from None
    except (ValueError, EOFError, SyntaxError, tokenize.TokenError, OverflowError) as e:
        # not a .npy file, an object array, a truncated or garbled header (numpy parses it as Python)
        raise IndexFormatError(f"{path}: not a readable array ({type(e).__name__}: {e}); the index is "
                               "corrupt") from None

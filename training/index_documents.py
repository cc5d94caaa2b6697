"""The document side of index-aware query training: a fixed dense index as torch tensors.

ADORE (Zhan et al., SIGIR 2021) trains the query encoder against a fixed document index; JPQ
(Zhan et al., CIKM 2021) also trains the index's product-quantisation centroids against the
fixed document codes. :meth:`IndexDocuments.read` takes what scoring needs out of a faiss index:

- an index of exact vectors (Flat, IVF-Flat, HNSW): the vectors, fixed; nothing here trains;
- IVF-PQ with 8-bit codes, optionally after an OPQ rotation: each document's inverted list and
  codes stay fixed, the coarse centroids ``coarse`` (nlist x d) and the PQ centroids ``pq``
  (m x 256 x d/m) are parameters. A document's vector is ``coarse[list] + concat_j pq[j,
  code_j]`` (by residual, faiss's default) or the PQ part alone, and its score is the inner
  product with the query after the fixed OPQ rotation (``query_space``), which is what faiss
  computes for an inner-product IVF-PQ index scanning that list.

:meth:`IndexDocuments.write_to` puts the centroids back into a faiss index of the same codes,
so faiss then searches with exactly the scores trained here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

CENTROIDS = "centroids.npz"   # trained coarse and PQ centroids, beside a saved query model


def _faiss():
    import faiss

    return faiss


def _unwrap(index):
    """(the IVF or flat index inside, the OPQ rotation matrix or None)."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    rotation = None
    if isinstance(index, faiss.IndexPreTransform):
        if index.chain.size() != 1:
            raise ValueError("index-aware training supports one transform before the index (OPQ)")
        lt = faiss.downcast_VectorTransform(index.chain.at(0))
        if not isinstance(lt, faiss.LinearTransform) or lt.have_bias or lt.d_out != lt.d_in:
            raise ValueError("index-aware training supports an OPQ rotation before the index, not "
                             f"{type(lt).__name__}")
        rotation = faiss.vector_to_array(lt.A).reshape(lt.d_out, lt.d_in)
        index = faiss.downcast_index(index.index)
    return index, rotation


class IndexDocuments(nn.Module):
    """Scores of queries against a fixed index's documents (see the module docstring).

    ``vectors``: exact document vectors (n x d), or ``lists`` (n,), ``codes`` (n x m, uint8),
    ``coarse`` (nlist x d) and ``pq`` (m x ksub x d/m) for IVF-PQ; ``rotation`` (d x d) maps
    queries into the space of the codes; ``train_centroids`` makes the centroids parameters.
    The fixed arrays are non-persistent buffers: checkpoints hold only what trains.
    """

    def __init__(self, *, vectors: np.ndarray | None = None, lists: np.ndarray | None = None,
                 codes: np.ndarray | None = None, coarse: np.ndarray | None = None, pq: np.ndarray | None = None,
                 rotation: np.ndarray | None = None, by_residual: bool = True, train_centroids: bool = True) -> None:
        super().__init__()
        self.quantized = vectors is None
        self.by_residual = by_residual
        if self.quantized:
            if lists is None or codes is None or pq is None or (by_residual and coarse is None):
                raise ValueError("a quantised index needs lists, codes, pq (and coarse when by residual)")
            m, ksub, dsub = pq.shape
            if codes.shape != (len(lists), m):
                raise ValueError(f"codes of shape {codes.shape} for {len(lists)} documents and {m} sub-quantisers")
            self.register_buffer("lists", torch.as_tensor(np.asarray(lists, np.int64)), persistent=False)
            self.register_buffer("codes", torch.as_tensor(np.asarray(codes, np.int64)), persistent=False)
            self.register_buffer("_sub", torch.arange(m), persistent=False)
            self.pq = nn.Parameter(torch.as_tensor(np.array(pq, np.float32)), requires_grad=train_centroids)
            c = np.zeros((1, m * dsub), np.float32) if coarse is None else np.array(coarse, np.float32)
            self.coarse = nn.Parameter(torch.as_tensor(c), requires_grad=train_centroids and by_residual)
            self.dim, self.count = m * dsub, len(lists)
        else:
            v = torch.as_tensor(np.ascontiguousarray(vectors, np.float32))
            self.register_buffer("fixed", v, persistent=False)
            self.dim, self.count = v.shape[1], v.shape[0]
        r = None if rotation is None else torch.as_tensor(np.array(rotation, np.float32))
        self.register_buffer("rotation", r, persistent=False)

    # -- from and back into faiss -----------------------------------------------------------
    @classmethod
    def read(cls, index, train_centroids: bool = True) -> IndexDocuments:
        """What scoring needs from a faiss inner-product index (codes are read, never re-encoded)."""
        faiss = _faiss()
        inner, rotation = _unwrap(index)
        if inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("index-aware training needs an inner-product index")
        if isinstance(inner, faiss.IndexIVFPQ):
            pq = inner.pq
            if pq.nbits != 8:
                raise ValueError(f"index-aware training reads 8-bit PQ codes; this index has {pq.nbits}-bit "
                                 "codes (build it with PQ{m} instead of PQ{m}x{bits})")
            n, m = inner.ntotal, pq.M
            lists, codes = np.empty(n, np.int64), np.empty((n, m), np.uint8)
            seen = np.zeros(n, bool)
            invlists = inner.invlists
            for lst in range(inner.nlist):
                size = invlists.list_size(lst)
                if not size:
                    continue
                ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()
                raw = faiss.rev_swig_ptr(invlists.get_codes(lst), size * invlists.code_size).copy()
                if ids.min() < 0 or ids.max() >= n:
                    raise ValueError(f"inverted list {lst} holds ids outside 0..{n - 1}")
                lists[ids], codes[ids] = lst, raw.reshape(size, invlists.code_size)[:, :m]
                seen[ids] = True
            if not seen.all():
                raise ValueError(f"{int((~seen).sum())} documents are in no inverted list")
            centroids = faiss.vector_to_array(pq.centroids).reshape(m, pq.ksub, pq.dsub)
            coarse = inner.quantizer.reconstruct_n(0, inner.nlist) if inner.by_residual else None
            return cls(lists=lists, codes=codes, coarse=coarse, pq=centroids, rotation=rotation,
                       by_residual=bool(inner.by_residual), train_centroids=train_centroids)
        if isinstance(inner, faiss.IndexIVF):
            if not isinstance(inner, faiss.IndexIVFFlat):
                raise ValueError(f"index-aware training does not read {type(inner).__name__} indexes")
            inner = faiss.clone_index(inner)
            inner.make_direct_map()
        return cls(vectors=inner.reconstruct_n(0, inner.ntotal), rotation=rotation)

    def write_to(self, index) -> None:
        """Put the (trained) centroids into ``index``, a faiss index of the same codes."""
        if not self.quantized:
            return
        faiss = _faiss()
        inner, _ = _unwrap(index)
        pq = self.pq.detach().cpu().numpy().astype(np.float32)
        if tuple(pq.shape) != (inner.pq.M, inner.pq.ksub, inner.pq.dsub):
            raise ValueError("the index's PQ does not have the shape of these centroids")
        faiss.copy_array_to_vector(pq.ravel(), inner.pq.centroids)
        if inner.pq.transposed_centroids.size():
            inner.pq.sync_transposed_centroids()
        if self.by_residual:
            coarse = np.ascontiguousarray(self.coarse.detach().cpu().numpy(), np.float32)
            inner.quantizer.reset()
            inner.quantizer.add(coarse)

    def centroids(self) -> dict[str, np.ndarray]:
        """The centroids as arrays (empty for exact vectors): what :meth:`load_centroids` reads."""
        if not self.quantized:
            return {}
        return {"coarse": self.coarse.detach().cpu().numpy(), "pq": self.pq.detach().cpu().numpy()}

    def load_centroids(self, arrays) -> None:
        with torch.no_grad():
            for name in ("coarse", "pq"):
                value = torch.as_tensor(np.asarray(arrays[name], np.float32))
                target = getattr(self, name)
                if value.shape != target.shape:
                    raise ValueError(f"{name} centroids of shape {tuple(value.shape)}, expected {tuple(target.shape)}")
                target.copy_(value)

    # -- scoring -----------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return self.quantized and (self.pq.requires_grad or self.coarse.requires_grad)

    def query_space(self, q: torch.Tensor) -> torch.Tensor:
        """Queries in the space of the stored vectors (the OPQ rotation applied)."""
        return q if self.rotation is None else q @ self.rotation.t()

    def vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """Document vectors of internal ids ``rows`` (reconstructed from codes when quantised)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self._device())
        if not self.quantized:
            return self.fixed[rows]
        codes = self.codes[rows]                                   # (r, m)
        parts = self.pq[self._sub, codes]                          # (r, m, dsub)
        out = parts.reshape(len(rows), -1)
        if self.by_residual:
            out = out + self.coarse[self.lists[rows]]
        return out

    def _device(self) -> torch.device:
        return (self.pq if self.quantized else self.fixed).device


class ImpactDocuments(nn.Module):
    """The documents of an impact (sparse) index as rows of token weights: ``vectors(rows)`` is
    (len(rows) x vocabulary), each entry the stored impact divided by the index's scale, so a
    query's dot product with it is the score the index returns for that query."""

    def __init__(self, index) -> None:
        super().__init__()
        from scipy import sparse

        offsets, docs, impacts = index.offsets, index.docs, index.impacts
        terms = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        values = impacts.astype(np.float32) / np.float32(index.scale or 1.0)
        self.matrix = sparse.csr_matrix((values, (docs, terms)), shape=(index.num_docs, len(offsets) - 1))
        self.quantized, self.count, self.dim = False, index.num_docs, len(offsets) - 1
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # follows .to(device)

    @property
    def trainable(self) -> bool:
        return False

    def query_space(self, q: torch.Tensor) -> torch.Tensor:
        return q

    def vectors(self, rows) -> torch.Tensor:
        rows = np.asarray(torch.as_tensor(rows).cpu(), dtype=np.int64)
        return torch.from_numpy(self.matrix[rows].toarray()).to(self._anchor.device)

    def centroids(self) -> dict:
        return {}

    def write_to(self, index) -> None:
        pass

"""Coreset selection and a streaming memory bank that never holds all embeddings.

anomalib's :class:`KCenterGreedy` keeps every embedding, projects it, and updates the distances
with one ``norm(features - center)`` pass (a full N x d temporary) per selected point. Here:

* distances are updated with matrix products on pre-computed squared norms (no N x d temporary),
  several centres at a time (``batch``): the next centres are chosen greedily among the farthest
  candidates, then all points are updated with one GEMM;
* :class:`StreamingCoreset` continues the greedy selection chunk by chunk: earlier centres stay
  centres, each chunk adds the points farthest from them up to a quota proportional to what has been
  seen, so memory is the bank plus one chunk.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

KDTREE_MAX_DIM = 24


def gaussian_projection(in_dim: int, out_dim: int, seed: int = 0) -> torch.Tensor:
    """A fixed random projection (distances are preserved up to JL error)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(in_dim, out_dim, generator=gen) / math.sqrt(out_dim)


def min_sq_distances(points: torch.Tensor, centers: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Squared distance of each point to its nearest centre (chunked matrix products)."""
    if centers.shape[0] == 0:
        return torch.full((points.shape[0],), float("inf"), dtype=points.dtype)
    if points.shape[1] <= KDTREE_MAX_DIM and points.device.type == "cpu":
        from scipy.spatial import cKDTree

        # Few dimensions: a k-d tree is exact and much faster than a brute-force matrix.
        d, _ = cKDTree(centers.double().numpy()).query(
            points.double().numpy(), k=1, workers=torch.get_num_threads()
        )
        return torch.from_numpy(d * d).to(points.dtype)
    c2 = centers.pow(2).sum(1)
    out = torch.empty(points.shape[0], dtype=points.dtype)
    for start in range(0, points.shape[0], chunk):
        p = points[start : start + chunk]
        d2 = torch.addmm(c2.unsqueeze(0), p, centers.T, alpha=-2.0)
        out[start : start + chunk] = (d2.min(1).values + p.pow(2).sum(1)).clamp_min_(0)
    return out


def k_center_greedy(
    features: torch.Tensor,
    k: int,
    initial_min_d2: torch.Tensor | None = None,
    batch: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Indices of ``k`` points chosen farthest-first (approximate when ``batch`` > 1).

    ``initial_min_d2`` holds each point's squared distance to centres chosen before (streaming);
    without it the first point is drawn at random as anomalib does.
    """
    n = features.shape[0]
    k = min(k, n)
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    f2 = features.pow(2).sum(1)
    chosen: list[int] = []
    if initial_min_d2 is None:
        gen = torch.Generator().manual_seed(seed)
        first = int(torch.randint(n, (1,), generator=gen))
        chosen.append(first)
        c = features[first]
        min_d2 = (f2 - 2 * features @ c + c @ c).clamp_min_(0)
        min_d2[first] = 0
    else:
        min_d2 = initial_min_d2.clone()
    bar = tqdm(total=k, desc="coreset", unit="pt", disable=not progress, leave=False)
    bar.update(len(chosen))
    while len(chosen) < k:
        take = min(batch, k - len(chosen))
        if take == 1:
            picks = [int(torch.argmax(min_d2))]
        else:
            # Exact greedy among the farthest candidates, then one GEMM for everybody.
            cand = torch.topk(min_d2, min(n, 4 * take)).indices
            cf = features[cand]
            cand_d2 = min_d2[cand].clone()
            cf2 = f2[cand]
            picks = []
            for _ in range(take):
                j = int(torch.argmax(cand_d2))
                if cand_d2[j] <= 0:
                    break
                picks.append(int(cand[j]))
                dj = (cf2 - 2 * cf @ cf[j] + cf2[j]).clamp_min_(0)
                cand_d2 = torch.minimum(cand_d2, dj)
            if not picks:
                break
        centers = features[picks]
        d2 = torch.addmm(f2.unsqueeze(1), features, centers.T, alpha=-2.0) + centers.pow(2).sum(1).unsqueeze(
            0
        )
        min_d2 = torch.minimum(min_d2, d2.min(1).values.clamp_min_(0))
        min_d2[picks] = 0
        chosen.extend(picks)
        bar.update(len(picks))
        if float(min_d2.max()) <= 0:
            break
    bar.close()
    return torch.tensor(chosen[:k], dtype=torch.long)


class StreamingCoreset:
    """A memory bank filled chunk by chunk, holding at most the bank plus one chunk.

    ``total`` is the number of embeddings that will be offered (known from the tile count), so each
    chunk may add ``target * seen / total`` centres in all; the selection runs on a random projection
    to ``proj_dim`` dimensions, the bank keeps full embeddings.
    """

    def __init__(
        self,
        dim: int,
        target: int,
        total: int,
        chunk_rows: int = 65536,
        proj_dim: int | None = 128,
        batch: int = 16,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.dim, self.target, self.total = dim, max(1, target), max(1, total)
        self.chunk_rows, self.batch, self.seed, self.dtype = chunk_rows, batch, seed, dtype
        self.projection = gaussian_projection(dim, proj_dim, seed) if proj_dim and proj_dim < dim else None
        self.bank = torch.empty(0, dim, dtype=dtype)
        self._bank_proj = torch.empty(0, proj_dim if self.projection is not None else dim)
        self._buffer: list[torch.Tensor] = []
        self._buffered = 0
        self.seen = 0

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x @ self.projection if self.projection is not None else x

    def add(self, embeddings: torch.Tensor) -> None:
        self._buffer.append(embeddings.detach().to(self.dtype))
        self._buffered += embeddings.shape[0]
        if self._buffered >= self.chunk_rows:
            self._merge()

    def _merge(self) -> None:
        if not self._buffer:
            return
        chunk = torch.cat(self._buffer)
        self._buffer, self._buffered = [], 0
        self.seen += chunk.shape[0]
        quota = (
            min(self.target, math.ceil(self.target * min(1.0, self.seen / self.total))) - self.bank.shape[0]
        )
        if quota <= 0:
            return
        proj = self._project(chunk)
        initial = None if self.bank.shape[0] == 0 else min_sq_distances(proj, self._bank_proj)
        idx = k_center_greedy(
            proj, quota, initial_min_d2=initial, batch=self.batch, seed=self.seed + self.seen
        )
        self.bank = torch.cat([self.bank, chunk[idx]])
        self._bank_proj = torch.cat([self._bank_proj, proj[idx]])

    def finish(self) -> torch.Tensor:
        """The bank, after the last partial chunk (everything offered: the quota reaches ``target``)."""
        self.total = self.seen + self._buffered
        self._merge()
        return self.bank

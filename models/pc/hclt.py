"""Hidden Chow-Liu Tree (HCLT) probabilistic circuits over uint8 pixels, trained by EM.

An HCLT (Liu, Mandt & Van den Broeck, ICLR 2022) is a latent tree model. A Chow-Liu tree over the
pixels X_1..X_D is learned from data; every pixel v gets a hidden variable Z_v with K states placed
at v's node of that tree, and

    p(x) = sum_z  pi(z_root) * prod_{v != root} T_v(z_v | z_parent(v)) * prod_v E_v(x_v | z_v).

Parameters (float64, stored as logs): a root prior ``pi`` (K,), one K x K transition per tree
edge ``log_trans[v, z_parent, z_v]`` and one K x 256 emission ("leaf categorical") per pixel
``log_emit[v, z_v, u]``.

Inference is one upward pass over the tree, O(D K^2) per sample. Messages stay in the log domain,
each node's message is shifted by its maximum before it is exponentiated, so the K x K product
with the (linear) transition runs on numbers in [0, 1] and cannot underflow to a wrong answer
(log-sum-exp without one ``exp`` per matrix entry). Kernels are numba-compiled, parallel over
samples, with no fastmath: the compressor downstream needs the same floats on every run.

Training (:func:`fit_em`) is mini-batch EM with "inertia" (the new parameters are a blend of the
old ones and the EM update, the old share growing over epochs) followed by full-batch EM, with a
Laplace pseudocount added to every expected count. Expected counts are accumulated per pixel or
per edge with the samples in order, never in thread-dependent order, so training with a given
seed gives bit-identical parameters whatever the thread count. The E-step's sums over hidden
states are BLAS matrix products (3x faster than per-sample loops), so a model retrained on
another CPU type or BLAS build may differ in the last bits -- which no file depends on: a coded
file names the stored model by hash, and the coder has its own loops.

Its kernels use numba's on-disk cache, which records this module's import name
(``neural_codecs.models.pc.hclt``); a cache written under another name is stale.
"""
from __future__ import annotations

import math
import os
from collections import deque
from typing import Callable, Sequence

import numba
import numpy as np
from numba import prange

#: Alphabet of one pixel.
N_VALUES = 256
#: Samples per task in the log-likelihood kernel (scratch buffers are allocated per task).
_LL_TASK = 32
#: Upper bound on the float64 entries of each per-block buffer (D x B x K: posteriors, inside
#: messages and their sums) of the E-step: 128 MB each, so a mini-batch of 512 MNIST digits is
#: one block.
_GAMMA_BUDGET = 1 << 24
#: Samples per task of the E-step: the matrix products of one node run over this many rows.
_ESTEP_TASK = 128
#: Tolerance when checking that stored distributions are normalised.
_NORM_TOL = 1e-6
#: Format number written into saved model files.
_FILE_VERSION = 1


# =============================================================================================
# Structure: Chow-Liu tree on quantised pixels, rooted at its centre
# =============================================================================================


@numba.njit(cache=True)
def _mi_row(qt, i, marg, logtab, joint, mi):  # pragma: no cover - compiled
    """Fill mi[i, j] and mi[j, i] for all j > i from joint histograms of (pixel i, pixel j)."""
    D, N = qt.shape
    n_bins = joint.shape[0]
    log_n = logtab[N]
    for j in range(i + 1, D):
        joint[:, :] = 0
        for n in range(N):
            joint[qt[i, n], qt[j, n]] += 1
        acc = 0.0
        for a in range(n_bins):
            if marg[i, a] == 0:
                continue
            for b in range(n_bins):
                c = joint[a, b]
                if c > 0:
                    acc += c * (logtab[c] + log_n - logtab[marg[i, a]] - logtab[marg[j, b]])
        mi[i, j] = acc / N
        mi[j, i] = acc / N


@numba.njit(cache=True, parallel=True)
def _pairwise_mi(qt, n_bins):  # pragma: no cover - compiled
    """Mutual information (nats) of every pixel pair from quantised data ``qt`` (D, N).

    Each pair's joint histogram is counted and reduced by one task; task k does rows k and
    D-1-k so the triangular workload splits evenly over threads. Every entry is computed by one
    fixed sequential loop, so the matrix does not depend on the thread count.
    """
    D, N = qt.shape
    logtab = np.empty(N + 1)
    logtab[0] = 0.0
    for c in range(1, N + 1):
        logtab[c] = np.log(c)
    marg = np.zeros((D, n_bins), dtype=np.int64)
    for v in range(D):
        for n in range(N):
            marg[v, qt[v, n]] += 1
    mi = np.zeros((D, D))
    for k in prange((D + 1) // 2):
        joint = np.empty((n_bins, n_bins), dtype=np.int64)
        lo = np.int64(k)
        hi = np.int64(D - 1) - lo
        _mi_row(qt, lo, marg, logtab, joint, mi)
        if hi != lo:
            _mi_row(qt, hi, marg, logtab, joint, mi)
    return mi


def _max_spanning_tree(w: np.ndarray) -> np.ndarray:
    """Prim's algorithm on a dense symmetric weight matrix; returns (D-1, 2) edges.

    O(D^2) numpy work. Ties go to the smallest index (``argmax`` takes the first maximum and a
    node's best link only changes on a strictly larger weight), so the tree is deterministic.
    """
    D = w.shape[0]
    in_tree = np.zeros(D, dtype=bool)
    in_tree[0] = True
    best = w[0].astype(np.float64).copy()
    best_from = np.zeros(D, dtype=np.int64)
    edges = np.empty((max(D - 1, 0), 2), dtype=np.int64)
    for e in range(D - 1):
        cand = np.where(in_tree, -np.inf, best)
        v = int(np.argmax(cand))
        edges[e] = (best_from[v], v)
        in_tree[v] = True
        better = (w[v] > best) & ~in_tree
        best[better] = w[v][better]
        best_from[better] = v
    return edges


def _adjacency(D: int, edges: np.ndarray) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(D)]
    for a, b in edges.tolist():
        adj[a].append(b)
        adj[b].append(a)
    for nbrs in adj:
        nbrs.sort()  # fixed visiting order -> deterministic BFS
    return adj


def _bfs(adj: list[list[int]], start: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and BFS parents (-1 at ``start``) from ``start`` in a tree."""
    D = len(adj)
    dist = np.full(D, -1, dtype=np.int64)
    par = np.full(D, -1, dtype=np.int64)
    dist[start] = 0
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                par[v] = u
                queue.append(v)
    return dist, par


def _tree_centre(adj: list[list[int]]) -> int:
    """The node of minimum eccentricity (smallest index of the two when there are two).

    The centre of a tree is the middle of any longest path, found by two breadth-first searches
    (farthest node from 0, then farthest node from that one) in O(D).
    """
    dist0, _ = _bfs(adj, 0)
    a = int(np.argmax(dist0))
    dist_a, par_a = _bfs(adj, a)
    b = int(np.argmax(dist_a))
    path = [b]
    while path[-1] != a:
        path.append(int(par_a[path[-1]]))
    L = len(path) - 1
    return min(path[L // 2], path[(L + 1) // 2])


def learn_structure(data: np.ndarray, n_bins: int = 16, seed: int = 0,
                    max_samples: int = 4096) -> np.ndarray:
    """Chow-Liu tree over the pixels of ``data`` (N, D) uint8; returns ``parent`` (D,) int64.

    Mutual information is estimated on pixels quantised to ``n_bins`` equal bins (value * n_bins
    // 256): the exact 256-value MI needs a 256 x 256 joint histogram for each of the D^2/2 pairs
    (about 20 G counters' worth of work for MNIST and much more for 32 x 32 x 3), while 16 bins
    keep the strong neighbour dependencies that decide a Chow-Liu tree at 1/256 of the cost.
    At most ``max_samples`` rows (a ``seed``-ed random subset) are used, for the same reason.

    The maximum spanning tree (Prim, O(D^2)) is rooted at its centre, the node that minimises
    the tree height: the height bounds the depth of the passes a coder has to run. Ties are
    broken by index, so the result depends only on ``data``, ``n_bins``, ``seed``.
    ``parent[root] == -1``.
    """
    data = _check_images(data, None, "data")
    if not 2 <= n_bins <= N_VALUES:
        raise ValueError(f"n_bins must be in [2, 256], got {n_bins}")
    N, D = data.shape
    if N == 0:
        raise ValueError("learn_structure needs at least one sample")
    if N > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(N, size=max_samples, replace=False))
        data = data[rows]
    q = ((data.astype(np.uint16) * n_bins) >> 8).astype(np.uint8)
    mi = _pairwise_mi(np.ascontiguousarray(q.T), n_bins)
    edges = _max_spanning_tree(mi)
    adj = _adjacency(D, edges)
    root = _tree_centre(adj)
    _, parent = _bfs(adj, root)
    return parent


def _children(parent: np.ndarray) -> tuple[int, list[list[int]]]:
    """Root and sorted child lists of a parent array; ValueError unless it is one tree."""
    parent = np.asarray(parent)
    if parent.ndim != 1 or parent.size == 0 or not np.issubdtype(parent.dtype, np.integer):
        raise ValueError("parent must be a non-empty 1-D integer array")
    D = parent.size
    roots = np.flatnonzero(parent == -1)
    if roots.size != 1:
        raise ValueError(f"parent must have exactly one root (-1), found {roots.size}")
    if np.any((parent < -1) | (parent >= D)):
        raise ValueError("parent entries must be -1 or a node index")
    children: list[list[int]] = [[] for _ in range(D)]
    for v, p in enumerate(parent.tolist()):
        if p >= 0:
            children[p].append(v)
    return int(roots[0]), children


def topological_order(parent: np.ndarray) -> np.ndarray:
    """Breadth-first node order, root first, children in index order; every parent precedes
    its children. Raises ValueError if ``parent`` is not a single tree (cycle, unreachable node)."""
    root, children = _children(parent)
    order = [root]
    head = 0
    while head < len(order):
        order.extend(children[order[head]])
        head += 1
    if len(order) != len(children):
        raise ValueError("parent does not describe a tree (cycle or unreachable nodes)")
    return np.asarray(order, dtype=np.int64)


def tree_height(parent: np.ndarray) -> int:
    """Number of edges on the longest root-to-leaf path."""
    order = topological_order(parent)
    parent = np.asarray(parent, dtype=np.int64)
    depth = np.zeros(parent.size, dtype=np.int64)
    for v in order[1:].tolist():  # BFS order: a parent's depth is known before its children's
        depth[v] = depth[parent[v]] + 1
    return int(depth.max())


# =============================================================================================
# Compiled passes
# =============================================================================================


@numba.njit(cache=True)
def _upward(x, mask, order, parent, emit_t, trans_t, prior, beta, s, out):  # pragma: no cover
    """Upward pass for every row n of x: out[n] = log p(x_n observed by mask_n), -inf if impossible.

    Probability domain with power-of-two rescaling (no exp/log per entry): ``emit_t`` holds
    emission *probabilities* indexed [v, value, state]. Leaves ``beta[n, v]`` = v's inside message
    (its emission times its children's messages) scaled so its maximum lies in [0.5, 1), and
    ``s[n, v, zp] = sum_zc T_v[zp, zc] beta[n, v, zc]`` (zc ascending), which the downward pass
    reuses. ``trans_t[v, zc, zp]`` is T_v transposed, so that sum runs over contiguous rows for
    all zp at once. Unobserved pixels contribute an emission of 1.

    Node-major: each node's K x K matrix is used for all the samples in turn while it sits in L1;
    sample-major, every sample would stream the whole D x K x K array (6 MB at D = 784, K = 32)
    from memory. The floats of each sample are the same either way.
    """
    D = order.shape[0]
    K = prior.shape[0]
    B = x.shape[0]
    for n in range(B):
        out[n] = 0.0  # the sum of the scale exponents until the root, then the answer
        for v in range(D):
            if mask[n, v]:
                xv = x[n, v]
                for z in range(K):
                    beta[n, v, z] = emit_t[v, xv, z]
            else:
                for z in range(K):
                    beta[n, v, z] = 1.0
    for t in range(D - 1, -1, -1):
        v = order[t]
        p = parent[v]
        tv = trans_t[v]
        for n in range(B):
            if out[n] == -np.inf:
                continue
            bv = beta[n, v]
            m = 0.0
            for z in range(K):
                if bv[z] > m:
                    m = bv[z]
            if not m > 0.0:
                out[n] = -np.inf
                continue
            _, e = math.frexp(m)
            out[n] += e
            f = math.ldexp(1.0, -e)
            for z in range(K):
                bv[z] *= f
            if t == 0:
                tot = 0.0
                for z in range(K):
                    tot += prior[z] * bv[z]
                out[n] = out[n] * math.log(2.0) + math.log(tot)
                continue
            sv = s[n, v]
            for zp in range(K):
                sv[zp] = 0.0
            for zc in range(K):
                b = bv[zc]
                tc = tv[zc]
                for zp in range(K):
                    sv[zp] += tc[zp] * b
            bp = beta[n, p]
            for zp in range(K):
                bp[zp] *= sv[zp]


@numba.njit(cache=True, parallel=True)
def _loglik_batch(x, mask, order, parent, emit_t, trans_t, prior):  # pragma: no cover - compiled
    """log p(x_n observed by mask_n) for every row; tasks of ``_LL_TASK`` samples share scratch."""
    N, D = x.shape
    K = prior.shape[0]
    out = np.empty(N)
    n_tasks = (N + _LL_TASK - 1) // _LL_TASK
    for task in prange(n_tasks):
        lo = task * _LL_TASK
        hi = min(N, lo + _LL_TASK)
        beta = np.empty((hi - lo, D, K))
        s = np.empty((hi - lo, D, K))
        _upward(x[lo:hi], mask[lo:hi], order, parent, emit_t, trans_t, prior, beta, s, out[lo:hi])
    return out


@numba.njit(cache=True)
def _inside_nm(x, lo, hi, order, parent, emit_t, trans_t, prior, beta, s, out):  # pragma: no cover
    """:func:`_upward` for the E-step, on rows lo..hi of a block, all pixels observed, in the
    node-major layout ``beta[v, n, :]``: each node's messages for the task's samples form one
    contiguous (n, K) matrix, so the sums over the child's state are one matrix product per node
    (BLAS, through numba's np.dot) instead of a K-long vector update per sample and state.
    Same scaling as :func:`_upward` (each message's maximum in [0.5, 1)); the floats differ from
    it in the last bits (BLAS orders and fuses its sums its own way), which training allows: the
    coder never runs this code, and a task's rows depend only on the block, not on threads.
    """
    D = order.shape[0]
    K = prior.shape[0]
    for n in range(lo, hi):
        out[n] = 0.0
    for v in range(D):
        for n in range(lo, hi):
            xv = x[n, v]
            for z in range(K):
                beta[v, n, z] = emit_t[v, xv, z]
    for t in range(D - 1, -1, -1):
        v = order[t]
        bv = beta[v, lo:hi]
        for n in range(hi - lo):
            m = 0.0
            for z in range(K):
                if bv[n, z] > m:
                    m = bv[n, z]
            _, e = math.frexp(m)  # m = 0 (an impossible sample) leaves the row at 0
            out[lo + n] += e
            f = math.ldexp(1.0, -e)
            for z in range(K):
                bv[n, z] *= f
        if t == 0:
            for n in range(hi - lo):
                tot = 0.0
                for z in range(K):
                    tot += prior[z] * bv[n, z]
                out[lo + n] = out[lo + n] * math.log(2.0) + math.log(tot) if tot > 0.0 else -np.inf
            continue
        sv = s[v, lo:hi]
        np.dot(bv, trans_t[v], sv)  # s[n, zp] = sum_zc beta[n, zc] T_v[zp, zc]
        bp = beta[parent[v], lo:hi]
        for n in range(hi - lo):
            for z in range(K):
                bp[n, z] *= sv[n, z]


@numba.njit(cache=True)
def _posteriors_nm(lo, hi, order, parent, trans, prior, beta, s, gamma):  # pragma: no cover
    """Posterior marginals ``gamma[v, n]`` of rows lo..hi after :func:`_inside_nm` (zero for an
    impossible sample). Given its parent's state, Z_v depends only on the evidence below v, so
    P(zc | x) = beta_v[zc] * sum_zp W_v[zp] T_v[zp, zc] with W_v = P(zp | x) / s_v[zp]: no outside
    messages, and the sum over zp is again one matrix product per node. Each s_v is read only
    here, so W_v overwrites it in place for :func:`_edge_counts`, which needs the same factor."""
    D = order.shape[0]
    K = prior.shape[0]
    r = order[0]
    T = hi - lo
    for n in range(lo, hi):
        tot = 0.0
        for z in range(K):
            gamma[r, n, z] = prior[z] * beta[r, n, z]
            tot += gamma[r, n, z]
        for z in range(K):
            gamma[r, n, z] = gamma[r, n, z] / tot if tot > 0.0 else 0.0
    for t in range(1, D):
        v = order[t]
        wv = s[v, lo:hi]
        gp = gamma[parent[v], lo:hi]
        for n in range(T):
            for z in range(K):
                g = gp[n, z]
                wv[n, z] = g / wv[n, z] if g != 0.0 else 0.0
        gv = gamma[v, lo:hi]
        np.dot(wv, trans[v], gv)
        bv = beta[v, lo:hi]
        for n in range(T):
            for z in range(K):
                gv[n, z] *= bv[n, z]


@numba.njit(cache=True, parallel=True)
def _estep_block(x, order, parent, emit_t, trans, trans_t, prior, beta, s, gamma, ll):  # pragma: no cover
    """E-step on a block of samples: fills ``ll`` (B,), posteriors ``gamma`` and keeps the inside
    messages ``beta`` and the factors ``s`` = W (all node-major, (D, B, K)) for
    :func:`_edge_counts`. Tasks of ``_ESTEP_TASK`` rows, fixed by B alone, so the thread count
    changes no float."""
    B = x.shape[0]
    for task in prange((B + _ESTEP_TASK - 1) // _ESTEP_TASK):
        lo = task * _ESTEP_TASK
        hi = min(B, lo + _ESTEP_TASK)
        _inside_nm(x, lo, hi, order, parent, emit_t, trans_t, prior, beta, s, ll)
        _posteriors_nm(lo, hi, order, parent, trans, prior, beta, s, gamma)


@numba.njit(cache=True, parallel=True)
def _edge_counts(parent, trans, beta, w, tcount):  # pragma: no cover - compiled
    """tcount[v] += T_v * (W_v^T @ beta_v), ``w`` holding W_v = P(z_parent | x) / s_v as
    :func:`_estep_block` leaves it -- the expected transition counts sum_n P(zp, zc | x_n) with
    T_v factored out of the sum, one (K x B) @ (B x K) product per edge. Parallel over edges;
    each edge's sum covers the block's samples in one product, so the thread count changes
    nothing."""
    D, B, K = w.shape
    for v in prange(D):
        if parent[v] < 0:
            continue
        M = np.dot(w[v].T, beta[v])
        for zp in range(K):
            for zc in range(K):
                tcount[v, zp, zc] += M[zp, zc] * trans[v, zp, zc]


@numba.njit(cache=True, parallel=True)
def _emit_reduce(x, gamma, ecounts):  # pragma: no cover - compiled
    """ecounts[v, x_nv, :] += gamma[v, n, :]: parallel over pixels, samples in order per pixel."""
    B, D = x.shape
    K = gamma.shape[2]
    for v in prange(D):
        for n in range(B):
            xv = x[n, v]
            for z in range(K):
                ecounts[v, xv, z] += gamma[v, n, z]


# =============================================================================================
# Model
# =============================================================================================


def _check_images(x, D: int | None, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {x.dtype}")
    if x.ndim != 2 or (D is not None and x.shape[1] != D):
        want = f"(N, {D})" if D is not None else "(N, D)"
        raise ValueError(f"{name} must have shape {want}, got {x.shape}")
    return np.ascontiguousarray(x)


def _logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


class HCLT:
    """An HCLT: tree ``parent`` (D,), ``log_prior`` (K,), ``log_trans`` (D, K, K) [row = parent
    state, column = child state; the root's matrix is unused], ``log_emit`` (D, K, 256).

    Arrays are float64 logs; the constructor validates shapes, dtypes and normalisation, so a
    model that exists is usable. Treat instances as immutable (EM returns new ones): the linear
    and transposed copies the kernels read are computed once, at construction.
    """

    def __init__(self, parent, log_prior, log_trans, log_emit):
        self.parent = np.ascontiguousarray(parent, dtype=np.int64)
        self.log_prior = np.ascontiguousarray(log_prior, dtype=np.float64)
        self.log_trans = np.ascontiguousarray(log_trans, dtype=np.float64)
        self.log_emit = np.ascontiguousarray(log_emit, dtype=np.float64)
        self.order = topological_order(self.parent)
        self._validate()
        # What the kernels read: linear prior/transitions/emissions, emissions indexed [v, value, state].
        self._prior = np.exp(self.log_prior)
        self._trans = np.exp(self.log_trans)
        self._emit_t = np.ascontiguousarray(np.exp(self.log_emit).transpose(0, 2, 1))
        self._trans_t = np.ascontiguousarray(self._trans.transpose(0, 2, 1))

    # -- basic properties -----------------------------------------------------------------------

    @property
    def D(self) -> int:
        return int(self.parent.size)

    @property
    def K(self) -> int:
        return int(self.log_prior.size)

    @property
    def root(self) -> int:
        return int(self.order[0])

    def _validate(self) -> None:
        D, K = self.D, self.K
        if K < 1:
            raise ValueError("log_prior must have at least one state")
        if self.log_trans.shape != (D, K, K):
            raise ValueError(f"log_trans must have shape {(D, K, K)}, got {self.log_trans.shape}")
        if self.log_emit.shape != (D, K, N_VALUES):
            raise ValueError(f"log_emit must have shape {(D, K, N_VALUES)}, got {self.log_emit.shape}")
        edges = np.flatnonzero(self.parent >= 0)
        for name, arr in (("log_prior", self.log_prior), ("log_trans", self.log_trans[edges]),
                          ("log_emit", self.log_emit)):
            if np.any(np.isnan(arr)) or np.any(arr == np.inf):
                raise ValueError(f"{name} contains NaN or +inf")
            if arr.size and np.max(np.abs(_logsumexp(arr, -1))) > _NORM_TOL:
                raise ValueError(f"{name} rows are not normalised distributions")

    # -- construction and files -----------------------------------------------------------------

    @classmethod
    def random(cls, parent, K: int, seed: int = 0) -> "HCLT":
        """Random positive parameters (each entry uniform in [0.5, 1.5] before normalising):
        far enough from uniform for EM to break the symmetry between hidden states, never so
        close to zero that a state starts out dead. The root's unused matrix is uniform."""
        parent = np.asarray(parent, dtype=np.int64)
        D = parent.size
        rng = np.random.default_rng(seed)

        def dist(*shape):
            p = rng.uniform(0.5, 1.5, size=shape)
            return np.log(p / p.sum(-1, keepdims=True))

        log_prior = dist(K)
        log_trans = dist(D, K, K)
        log_trans[parent == -1] = -np.log(K)
        log_emit = dist(D, K, N_VALUES)
        return cls(parent, log_prior, log_trans, log_emit)

    def save(self, path) -> None:
        """Write an uncompressed ``.npz`` (no pickled objects) to exactly ``path``."""
        with open(path, "wb") as f:
            np.savez(f, version=np.int64(_FILE_VERSION), parent=self.parent,
                     log_prior=self.log_prior, log_trans=self.log_trans, log_emit=self.log_emit)

    @classmethod
    def load(cls, path) -> "HCLT":
        """Read a file written by :meth:`save`; ValueError naming ``path`` for anything else
        (not an npz, pickled content, missing arrays, wrong dtypes/shapes, unnormalised rows)."""
        keys = ("version", "parent", "log_prior", "log_trans", "log_emit")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in keys if k not in z.files]
                if missing:
                    raise ValueError(f"missing arrays {missing}")
                arrs = {k: z[k] for k in keys}
            if arrs["version"].shape != () or int(arrs["version"]) != _FILE_VERSION:
                raise ValueError(f"unsupported version {arrs['version']!r}")
            if arrs["parent"].dtype != np.int64:
                raise ValueError(f"parent must be int64, got {arrs['parent'].dtype}")
            for k in keys[2:]:
                if arrs[k].dtype != np.float64:
                    raise ValueError(f"{k} must be float64, got {arrs[k].dtype}")
            if arrs["log_prior"].ndim != 1:
                raise ValueError("log_prior must be 1-D")
            return cls(arrs["parent"], arrs["log_prior"], arrs["log_trans"], arrs["log_emit"])
        except FileNotFoundError:
            raise
        except Exception as e:  # np.load raises OSError/ValueError/BadZipFile/EOFError...
            raise ValueError(f"{os.fspath(path)}: not a valid HCLT model file: {e}") from e

    # -- inference ------------------------------------------------------------------------------

    def _run_loglik(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return _loglik_batch(x, mask, self.order, self.parent, self._emit_t, self._trans_t,
                             self._prior)

    def loglik(self, x) -> np.ndarray:
        """Exact log p(x) in nats for each row of ``x`` (N, D) uint8."""
        x = _check_images(x, self.D, "x")
        return self._run_loglik(x, np.ones(x.shape, dtype=np.bool_))

    def marginal_loglik(self, x, observed) -> np.ndarray:
        """log p(x restricted to ``observed``) for each row: unobserved pixels are summed out
        (their emission is 1, so their value in ``x`` is ignored). All-False rows give 0."""
        x = _check_images(x, self.D, "x")
        observed = np.asarray(observed)
        if observed.dtype != np.bool_ or observed.shape != x.shape:
            raise ValueError(f"observed must be a bool array of shape {x.shape}")
        return self._run_loglik(x, np.ascontiguousarray(observed))

    def conditionals_naive(self, x, order) -> np.ndarray:
        """(D, 256) table: row t is p(X_order[t] = u | x_order[<t]) for u = 0..255.

        The naive O(D * |circuit|) reference: position t costs one full marginal upward pass
        for each of the 256 candidate values (run as one batch of 256). It exists to check the
        fast conditionals of a coder, not to be fast. Rows sum to 1.
        """
        x = _check_images(np.asarray(x)[None], self.D, "x")[0]
        order = np.asarray(order, dtype=np.int64)
        if order.shape != (self.D,) or not np.array_equal(np.sort(order), np.arange(self.D)):
            raise ValueError("order must be a permutation of range(D)")
        values = np.arange(N_VALUES, dtype=np.uint8)
        batch = np.repeat(x[None], N_VALUES, axis=0)
        mask = np.zeros((N_VALUES, self.D), dtype=np.bool_)
        out = np.empty((self.D, N_VALUES))
        for t, v in enumerate(order.tolist()):
            mask[:, v] = True
            batch[:, v] = values
            lp = self._run_loglik(batch, mask)
            p = np.exp(lp - lp.max())
            out[t] = p / p.sum()
            batch[:, v] = x[v]
        return out


# =============================================================================================
# EM
# =============================================================================================


def bits_per_dim(avg_loglik: float, D: int) -> float:
    """Average log-likelihood per sample (nats) -> bits per pixel."""
    return -avg_loglik / (D * math.log(2.0))


class _Linear:
    """The parameters the E-step kernels read, in the probability domain: prior (K,),
    trans (D, K, K) and its transpose, emissions indexed [v, value, state]. EM updates these
    directly; logs (an :class:`HCLT`) are made only when a model is handed out."""

    def __init__(self, parent, order, prior, trans, emit_t, trans_t=None):
        self.parent, self.order = parent, order
        self.prior, self.trans, self.emit_t = prior, trans, emit_t
        self.trans_t = np.ascontiguousarray(trans.transpose(0, 2, 1)) if trans_t is None else trans_t

    @classmethod
    def of(cls, model: "HCLT") -> "_Linear":
        return cls(model.parent, model.order, model._prior, model._trans, model._emit_t, model._trans_t)

    def to_hclt(self) -> "HCLT":
        with np.errstate(divide="ignore"):
            return HCLT(self.parent, np.log(self.prior), np.log(self.trans),
                        np.log(self.emit_t.transpose(0, 2, 1)))


class _Workspace:
    """E-step buffers (D x B x K each, node-major), reused across mini-batches and blocks."""

    def __init__(self):
        self.flat = None

    def get(self, rows: int, D: int, K: int):
        """Three C-contiguous (D, rows, K) arrays (the kernels' matrix products need contiguous
        rows), carved from flat buffers that grow only when a larger block comes."""
        size = D * rows * K
        if self.flat is None or self.flat[0].size < size:
            self.flat = tuple(np.empty(size) for _ in range(3))
        return tuple(f[:size].reshape(D, rows, K) for f in self.flat)


def _counts(lin: _Linear, data: np.ndarray, work: _Workspace):
    """Expected counts (prior (K,), transitions (D, K, K), emissions (D, 256, K)) and the
    per-sample log-likelihoods of ``data`` under ``lin``."""
    N, D = data.shape
    K = lin.prior.shape[0]
    block = max(_ESTEP_TASK, _GAMMA_BUDGET // (D * K))
    trans = np.zeros((D, K, K))
    ecounts = np.zeros((D, N_VALUES, K))
    pcounts = np.zeros(K)
    ll = np.empty(N)
    root = lin.order[0]
    for lo in range(0, N, block):
        xb = data[lo:lo + block]
        n = xb.shape[0]
        beta, s, gamma = work.get(n, D, K)
        _estep_block(xb, lin.order, lin.parent, lin.emit_t, lin.trans, lin.trans_t, lin.prior,
                     beta, s, gamma, ll[lo:lo + n])
        _edge_counts(lin.parent, lin.trans, beta, s, trans)
        _emit_reduce(xb, gamma, ecounts)
        pcounts += gamma[root].sum(axis=0)
    return pcounts, trans, ecounts, ll


def expected_counts(model: HCLT, data) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """E-step: expected sufficient statistics of ``data`` under ``model``.

    Returns (prior counts (K,), transition counts (D, K, K), emission counts (D, K, 256),
    per-sample log-likelihoods (N,)). Samples go through in blocks whose size depends only on
    D and K (to bound the B x D x K buffers), so the summation order, and hence every bit of the
    result, is a function of the inputs alone.
    """
    data = _check_images(data, model.D, "data")
    pcounts, trans, ecounts, ll = _counts(_Linear.of(model), data, _Workspace())
    return pcounts, trans, np.ascontiguousarray(ecounts.transpose(0, 2, 1)), ll


@numba.njit(cache=True, parallel=True)
def _blend_middle(counts, pseudocount, old, inertia, out):  # pragma: no cover - compiled
    """out[a, :, c] = inertia * old[a, :, c] + (1 - inertia) * (counts + pseudocount)[a, :, c] / total,
    the total running over the middle axis in ascending order; a slice without mass (possible
    only with pseudocount 0) keeps its old values."""
    A, M, C = counts.shape
    for i in prange(A):
        tot = np.zeros(C)
        for m in range(M):
            for c in range(C):
                tot[c] += counts[i, m, c] + pseudocount
        for m in range(M):
            for c in range(C):
                if tot[c] > 0.0:
                    new = (counts[i, m, c] + pseudocount) / tot[c]
                    out[i, m, c] = inertia * old[i, m, c] + (1.0 - inertia) * new if inertia else new
                else:
                    out[i, m, c] = old[i, m, c]


def _m_step_linear(lin: _Linear, counts, pseudocount: float, inertia: float) -> _Linear:
    """The M-step (of :func:`m_step` and :func:`fit_em`): counts (prior (K,), transitions
    (D, K, K), emissions (D, 256, K)) -> new parameters, blended with ``lin``'s by ``inertia``."""
    pc, tc, ec = (np.ascontiguousarray(c, dtype=np.float64) for c in counts[:3])
    D, K = tc.shape[:2]
    prior = np.empty(K)
    _blend_middle(pc.reshape(1, K, 1), pseudocount, lin.prior.reshape(1, K, 1), inertia, prior.reshape(1, K, 1))
    trans = np.empty((D, K, K))
    _blend_middle(tc.reshape(D * K, K, 1), pseudocount, lin.trans.reshape(D * K, K, 1), inertia,
                  trans.reshape(D * K, K, 1))
    root = lin.order[0]
    trans[root] = lin.trans[root]  # unused; keep as is
    emit_t = np.empty_like(lin.emit_t)
    _blend_middle(ec, pseudocount, lin.emit_t, inertia, emit_t)
    return _Linear(lin.parent, lin.order, prior, trans, emit_t)


def m_step(model: HCLT, counts, pseudocount: float, inertia: float = 0.0) -> HCLT:
    """New model from expected counts (as returned by :func:`expected_counts`, ``ll`` ignored):
    new = inertia * old + (1 - inertia) * (counts + pseudocount) / total."""
    pc, tc, ec = counts[:3]
    ec_t = np.asarray(ec).transpose(0, 2, 1)  # the kernels' [v, value, state] layout
    return _m_step_linear(_Linear.of(model), (pc, tc, ec_t), pseudocount, inertia).to_hclt()


def em_step(model: HCLT, data, pseudocount: float, inertia: float = 0.0) -> tuple[HCLT, float]:
    """One EM iteration on ``data``; returns the new model and the average log-likelihood of
    ``data`` under the *old* one (what the E-step computed anyway)."""
    counts = expected_counts(model, data)
    return m_step(model, counts, pseudocount, inertia), float(np.mean(counts[3]))


def fit_em(data, K: int, *, minibatch_epochs: int, batch_size: int, full_epochs: int,
           pseudocount: float, inertia: Sequence[float] = (0.2, 0.9), seed: int = 0,
           progress: Callable[[int, int, float], None] | None = None,
           n_bins: int = 16) -> tuple[HCLT, list[float]]:
    """Learn an HCLT with K hidden states per pixel from ``data`` (N, D) uint8.

    1. structure: :func:`learn_structure` (``n_bins``, ``seed``);
    2. parameters: :meth:`HCLT.random` (``seed``);
    3. ``minibatch_epochs`` of mini-batch EM over a ``seed``-ed shuffle, batches of
       ``batch_size``, each step new = inertia * old + (1 - inertia) * EM update, inertia rising
       linearly from ``inertia[0]`` (first epoch) to ``inertia[1]`` (last): big early steps to
       move away from the random start, small late ones to average out batch noise;
    4. ``full_epochs`` of full-batch EM (plain EM, monotone in the penalised likelihood).

    ``pseudocount`` is added to every expected count of the whole data set (Laplace smoothing),
    so no value ever gets probability 0 -- a compressor must be able to code any image. A
    mini-batch step adds its share, ``pseudocount * batch / N``: the prior is over the data set,
    not per batch (per batch, 0.01 on each of 256 values would outweigh the ~16 counts a state
    gets from a batch of 512 at K = 32 and smooth every emission toward uniform).

    Returns (model, history): history[e] is the average log-likelihood (nats per sample) of the
    training data seen in epoch e, computed by that epoch's E-steps (so for full-batch epochs it
    is the likelihood of the parameters *before* that epoch's update). ``progress(epoch, total,
    bpd)`` is called after each epoch, epoch counted from 1 over both phases.
    """
    data = _check_images(data, None, "data")
    N = data.shape[0]
    if N == 0 or K < 1 or batch_size < 1 or minibatch_epochs < 0 or full_epochs < 0:
        raise ValueError("fit_em needs data, K >= 1, batch_size >= 1, epochs >= 0")
    if pseudocount < 0:
        raise ValueError("pseudocount must be >= 0")
    start, end = (float(v) for v in inertia)
    D = data.shape[1]
    init_seed, shuffle_seed = np.random.SeedSequence(seed).spawn(2)
    parent = learn_structure(data, n_bins=n_bins, seed=seed)
    model = HCLT.random(parent, K, seed=np.random.default_rng(init_seed).integers(2**63))
    rng = np.random.default_rng(shuffle_seed)
    total = minibatch_epochs + full_epochs
    history: list[float] = []

    def report(avg: float) -> None:
        history.append(avg)
        if progress is not None:
            progress(len(history), total, bits_per_dim(avg, D))

    lin, work = _Linear.of(model), _Workspace()
    for e in range(minibatch_epochs):
        frac = e / (minibatch_epochs - 1) if minibatch_epochs > 1 else 0.0
        inert = start + (end - start) * frac
        perm = rng.permutation(N)
        ll_sum = 0.0
        for lo in range(0, N, batch_size):
            rows = perm[lo:lo + batch_size]
            counts = _counts(lin, data[rows], work)
            # The pseudocount is a prior over the whole data set: a batch gets its share, or a
            # small batch's few counts per state would drown in it.
            lin = _m_step_linear(lin, counts, pseudocount * len(rows) / N, inert)
            ll_sum += float(np.sum(counts[3]))
        report(ll_sum / N)
    for _ in range(full_epochs):
        counts = _counts(lin, data, work)
        lin = _m_step_linear(lin, counts, pseudocount, 0.0)
        report(float(np.mean(counts[3])))
    model = lin.to_hclt()
    return model, history

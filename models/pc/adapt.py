"""Backward adaptation: the coder's tables follow the image being coded.

A patch model trained on one set of photographs meets images with other noise, grain and colour
statistics, and one image's regions differ among themselves. A fixed model pays for that mismatch
on every patch; the image itself, once partly decoded, says how its pixels behave. So encoder and
decoder both keep, from the patches already coded, the expected sufficient statistics of EM under
the current tables -- C_prior[z], C_trans[v, a, b] (P(Z_parent(v) = a, Z_v = b | patch)) and
C_emit[v, z, u] (P(Z_v = z | patch) for the patch's value u of v) -- and every ``every`` patches
replace each table row by its posterior mean under a Dirichlet prior centred on the model's own
row with ``strength`` pseudo-observations:

    row' = (A row0 + C_row) / (A + sum C_row),

then multiply all counts by ``decay`` (< 1: older patches weigh less, so the tables track the
image's current region rather than its average).

Nothing is transmitted: the decoder sees the same decoded patches in the same order and computes
the same counts. That needs the same floats on every machine, so the posterior pass follows the
coder's rules (:mod:`models.pc.coder`): probability domain, IEEE +, x and / only (no exp/log), every
sum in a fixed order, vectors rescaled by exact powers of two; each count's sum runs over the rows
in order, whatever the thread count.

It is the classical adaptive-context idea of lossless image coders (CALIC, JPEG-LS, JPEG XL's
MA trees adapt their statistics too) applied to a latent-variable model: the tree's structure stays,
its numbers move. Cost: one extra up/down pass over the tree per coded patch.

Its kernels use numba's on-disk cache, which records this module's import name
(``neural_codecs.models.pc.adapt``); a cache written under another name is stale.
"""
from __future__ import annotations

import dataclasses

import numba
import numpy as np

from .coder import CodingTables, _leaf, _matvec, _mul_into, _set_rescaled


@numba.njit(cache=True, nogil=True)
def _row_posteriors(x, order, parent, first_child, next_sibling, prior, trans, trans_t, emit,
                    msg, outer, g, inner, post, edge):  # pragma: no cover - compiled
    """Posteriors of one row x (D,) of values (-1 = missing):

    post[v] = P(Z_v | x); for each non-root v, P(Z_parent = a, Z_v = b | x) =
    edge[v, a] * trans[v, a, b] * inner[v, b].

    inner[v]: v's leaf times its children's upward messages; msg[v]: v's message to its parent;
    outer[v]: the message into v from the rest of the tree; g: the parent side of an edge. All
    rescaled vectors, their scales cancelling in the normalisations."""
    D = order.shape[0]
    K = prior.shape[0]
    for s in range(D - 1, -1, -1):
        u = order[s]
        _leaf(emit[u], x[u], inner[u])
        c = first_child[u]
        while c >= 0:
            _mul_into(inner[u], msg[c])
            c = next_sibling[c]
        if parent[u] >= 0:
            _matvec(trans_t[u], inner[u], msg[u])
    for s in range(D):
        b = order[s]
        p = parent[b]
        if p < 0:
            _set_rescaled(outer[b], prior)
        else:
            _leaf(emit[p], x[p], g)
            _mul_into(g, outer[p])
            c = first_child[p]
            while c >= 0:
                if c != b:
                    _mul_into(g, msg[c])
                c = next_sibling[c]
            _matvec(trans[b], g, outer[b])
            # Normaliser of the edge's joint: sum_a g[a] sum_b trans[b, a, :] inner[b, :].
            z = 0.0
            for a in range(K):
                t = 0.0
                for k in range(K):
                    t += trans[b, a, k] * inner[b, k]
                z += g[a] * t
            for a in range(K):
                edge[b, a] = g[a] / z if z > 0.0 else 0.0
        tot = 0.0
        for k in range(K):
            post[b, k] = inner[b, k] * outer[b, k]
            tot += post[b, k]
        for k in range(K):
            post[b, k] = post[b, k] / tot if tot > 0.0 else 0.0


@numba.njit(cache=True, nogil=True, parallel=True)
def _posteriors(X, order, parent, first_child, next_sibling, prior, trans, trans_t, emit, inner, post, edge):  # pragma: no cover
    D, K = emit.shape[0], emit.shape[1]
    for i in numba.prange(X.shape[0]):
        msg = np.empty((D, K))
        outer = np.empty((D, K))
        g = np.empty(K)
        _row_posteriors(X[i], order, parent, first_child, next_sibling, prior, trans, trans_t, emit,
                        msg, outer, g, inner[i], post[i], edge[i])


@numba.njit(cache=True, nogil=True, parallel=True)
def _accumulate(X, parent, trans, inner, post, edge, pcount, tcount, ecount):  # pragma: no cover - compiled
    """Add the rows' expected counts, each variable's sums over the rows in order (so the
    result does not depend on how variables are spread over threads); missing values skip
    their emission count."""
    B, D = X.shape
    K = pcount.shape[0]
    for v in numba.prange(D):
        for i in range(B):
            u = X[i, v]
            if u >= 0:
                for k in range(K):
                    ecount[v, k, u] += post[i, v, k]
            if parent[v] >= 0:
                for a in range(K):
                    ea = edge[i, v, a]
                    if ea != 0.0:
                        for k in range(K):
                            tcount[v, a, k] += ea * trans[v, a, k] * inner[i, v, k]
            else:
                for k in range(K):
                    pcount[k] += post[i, v, k]


@numba.njit(cache=True, nogil=True, parallel=True)
def _blend(base, counts, A, out):  # pragma: no cover - compiled
    """out[r] = (A base[r] + counts[r]) / its sum, for every row r (last axis summed in order)."""
    R, V = base.shape
    for r in numba.prange(R):
        tot = 0.0
        for u in range(V):
            out[r, u] = A * base[r, u] + counts[r, u]
            tot += out[r, u]
        for u in range(V):
            out[r, u] = out[r, u] / tot


def _blended(base: np.ndarray, counts: np.ndarray, A: float) -> np.ndarray:
    out = np.empty_like(base)
    _blend(base.reshape(-1, base.shape[-1]), counts.reshape(-1, base.shape[-1]), A, out.reshape(-1, base.shape[-1]))
    return out


def check_setting(strength, every, decay) -> tuple[float, int, float]:
    """A validated (strength, every, decay); ValueError names the bad setting."""
    if not (float(every).is_integer() and 1.0 <= strength <= 1e9 and 1 <= every <= 1 << 24 and 0.0 < decay <= 1.0):
        raise ValueError(f"adaptation setting {(strength, every, decay)} out of range "
                         "(1 <= strength <= 1e9, every an integer 1..2**24, 0 < decay <= 1)")
    return float(strength), int(every), float(decay)


#: Rows per posterior batch: bounds the three (rows, D, K) buffers.
_ROWS = 2048


class Adapter:
    """Tables that learn from the patches coded so far (see the module docstring).

    ``observe(x)`` takes coded rows (B, D) -- context and patch values, -1 where missing, in the
    model's variable space -- in coding order; ``tables`` are the tables to code the next rows with.
    Encoder and decoder must call ``observe`` with the same rows in the same order."""

    def __init__(self, tables: CodingTables, strength: float, every: int, decay: float = 1.0):
        self.strength, self.every, self.decay = check_setting(strength, every, decay)
        self.base = tables
        self.tables = tables
        self.prior_counts = np.zeros_like(tables.prior)
        self.trans_counts = np.zeros_like(tables.trans)
        self.emit_counts = np.zeros_like(tables.emit)
        self._pending = 0

    def observe(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.int64)
        m = self.tables
        if x.ndim != 2 or x.shape[1] != m.D:
            raise ValueError(f"rows must have shape (B, {m.D})")
        for lo in range(0, len(x), _ROWS):
            xs = x[lo:lo + _ROWS]
            inner, post, edge = (np.empty((len(xs), m.D, m.K)) for _ in range(3))
            _posteriors(xs, m.order, m.parent, m.first_child, m.next_sibling, m.prior, m.trans, m.trans_t,
                        m.emit, inner, post, edge)
            _accumulate(xs, m.parent, m.trans, inner, post, edge, self.prior_counts, self.trans_counts,
                        self.emit_counts)
        self._pending += len(x)
        if self._pending >= self.every:
            self._pending = 0
            self._update()

    def _update(self) -> None:
        b, A = self.base, self.strength
        trans = _blended(b.trans, self.trans_counts, A)
        root = b.order[0]
        trans[root] = b.trans[root]  # unused
        self.tables = dataclasses.replace(
            b, prior=_blended(b.prior[None], self.prior_counts[None], A)[0], trans=trans,
            emit=_blended(b.emit, self.emit_counts, A),
            trans_t=np.ascontiguousarray(trans.transpose(0, 2, 1)))
        if self.decay != 1.0:  # older patches count less: the tables follow the image's regions
            for c in (self.prior_counts, self.trans_counts, self.emit_counts):
                c *= self.decay

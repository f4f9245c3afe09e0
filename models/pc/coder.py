"""Per-pixel conditionals of a Hidden Chow-Liu Tree for entropy coding, fast and naive.

The coder needs, for every position t of a coding order sigma, the 256-way distribution
q_t(u) = p(X_sigma_t = u | x_sigma_1 .. x_sigma_(t-1)). In the latent tree,
q_t(u) ∝ sum_z w_t(z) E_b(u | z) with b = sigma_t and w_t(z) the joint probability of Z_b = z and all
evidence coded so far (the message into b from the rest of the tree).

**Order.** sigma is the depth-first pre-order of the tree (children by index). At b's turn, no
variable of b's subtree has been coded yet, and the tree path from the previous variable to b climbs
through subtrees that have just been completed and then steps down one edge. *Context* variables
(a patch's decoded neighbours; not coded) enter through upward messages computed once per patch
from the context alone (:func:`_context_pass`); missing context is marginalised (factor 1). So:

- **fast path** (:class:`Stepper`, used by encoder and decoder): keep, per node, the product of
  its own leaf factor and its finished children's upward messages (``prefix``) and its downward
  message (``down``). Between two steps, compute the upward message of each subtree that has just
  been completed (once per node per image) and one downward message. Each node's messages are
  computed once, so an image costs 2(D-1) K^2 + D K 256 multiply-adds: O(|p|) per image, which is
  within the paper's O(log D |p|) bound whatever the tree's depth.
- **naive path** (:func:`naive_conditionals`): for every t, recompute every upward message of the
  observed part and the downward messages from the root to b from scratch -- O(D |p|) per image,
  the test oracle and the speed baseline. It uses the same formulas in the same order, so its
  conditionals are bit-identical to the fast path's.

**Bit-exact decoding.** Everything is in the probability domain with IEEE + and x only (no exp/log,
no fastmath, every sum in a fixed order). After every product a vector is rescaled by an exact power
of two (frexp/ldexp) so its maximum lies in [0.5, 1), and entries below 2**-400 are set to zero.
With model probabilities >= 2**-100 (see :func:`coding_tables`; pcz model files store >= 2**-24)
no intermediate value can become subnormal, so a flush-to-zero setting elsewhere cannot change a
result. The model's probabilities are stored, not recomputed with exp at load time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .kernels import parallel_and_serial

#: Smallest nonzero model probability the coder accepts (kept well inside the normal range).
MIN_PROB = 2.0 ** -100
_TINY = 2.0 ** -400
_MIX_FLOOR = 2.0 ** -32


@dataclass(frozen=True, eq=False)
class CodingTables:
    """A latent tree in the probability domain, with the coding schedule precomputed.

    parent (D,) int64, -1 at the root; prior (K,); trans (D, K, K) with trans[v, z_parent, z_v]
    (the root's slice unused); emit (D, K, V) with emit[v, z_v, value]; all float64, >= MIN_PROB.
    ``coded`` (D,) bool marks the variables that are coded; the others are *context*: observed
    (already decoded neighbours of a patch) or missing (outside the image), never coded.
    """

    parent: np.ndarray
    prior: np.ndarray
    trans: np.ndarray
    emit: np.ndarray
    coded: np.ndarray
    order: np.ndarray  # (D,) depth-first pre-order
    coded_pos: np.ndarray  # positions in `order` of the coded variables
    first_child: np.ndarray  # (D,) -1 if none
    next_sibling: np.ndarray  # (D,) -1 if none; children in increasing index order
    trans_t: np.ndarray  # (D, K, K): trans_t[v, z_v, z_parent], for upward messages
    depth: np.ndarray  # (D,) edges from the root; the fast path keeps one message slot per depth

    @property
    def D(self) -> int:
        return len(self.parent)

    @property
    def K(self) -> int:
        return len(self.prior)

    @property
    def V(self) -> int:
        return self.emit.shape[2]

    @property
    def coded_vars(self) -> np.ndarray:
        """The coded variables in coding order."""
        return self.order[self.coded_pos]


def dfs_preorder(parent: np.ndarray) -> np.ndarray:
    """Depth-first pre-order from the root, children in increasing index order."""
    D = len(parent)
    children = [[] for _ in range(D)]
    roots = []
    for v, p in enumerate(parent):
        if not -1 <= p < D:
            raise ValueError("parent index out of range")
        (roots if p < 0 else children[p]).append(v)
    if len(roots) != 1:
        raise ValueError(f"a tree needs exactly one root, found {len(roots)}")
    order, stack = [], [roots[0]]
    while stack:
        v = stack.pop()
        order.append(v)
        stack.extend(reversed(children[v]))
    if len(order) != D:
        raise ValueError("parent array does not describe a tree (cycle or disconnected nodes)")
    return np.array(order, dtype=np.int64)


def coding_tables(parent, prior, trans, emit, coded=None) -> CodingTables:
    """Check a model's probability tables and precompute the coding order."""
    parent = np.ascontiguousarray(parent, dtype=np.int64)
    prior = np.ascontiguousarray(prior, dtype=np.float64)
    trans = np.ascontiguousarray(trans, dtype=np.float64)
    emit = np.ascontiguousarray(emit, dtype=np.float64)
    D, K = len(parent), len(prior)
    if trans.shape != (D, K, K) or emit.ndim != 3 or emit.shape[:2] != (D, K):
        raise ValueError("shapes must be parent (D,), prior (K,), trans (D, K, K), emit (D, K, V)")
    coded = np.ones(D, dtype=bool) if coded is None else np.ascontiguousarray(coded, dtype=bool)
    order = dfs_preorder(parent)
    root = order[0]
    for a in [prior, emit] + [trans[v] for v in range(D) if v != root]:
        if not np.isfinite(a).all() or (a < MIN_PROB).any():
            raise ValueError("coding tables need finite probabilities >= 2**-100")
    first_child = np.full(D, -1, dtype=np.int64)
    next_sibling = np.full(D, -1, dtype=np.int64)
    for v in range(D - 1, -1, -1):  # descending, so each list ends up in increasing order
        p = parent[v]
        if p >= 0:
            next_sibling[v] = first_child[p]
            first_child[p] = v
    depth = np.zeros(D, dtype=np.int64)
    for v in order[1:]:  # pre-order: a parent's depth is known before its children's
        depth[v] = depth[parent[v]] + 1
    return CodingTables(parent, prior, trans, emit, coded, order, np.flatnonzero(coded[order]),
                        first_child, next_sibling, np.ascontiguousarray(trans.transpose(0, 2, 1)), depth)


# ---------------------------------------------------------------------------------------------
# Kernels (compiled; fastmath off; fixed operation order)
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _rescale(v):  # pragma: no cover - compiled
    """Scale v by an exact power of two so max(v) lies in [0.5, 1); zero entries below 2**-400."""
    m = 0.0
    for k in range(v.shape[0]):
        if v[k] > m:
            m = v[k]
    if m == 0.0:
        return
    _, e = math.frexp(m)
    s = math.ldexp(1.0, -e)
    for k in range(v.shape[0]):
        x = v[k] * s
        v[k] = x if x >= _TINY else 0.0


@numba.njit(cache=True, nogil=True)
def _set_rescaled(out, src):  # pragma: no cover - compiled
    """out = src, rescaled (the root's downward message: the prior)."""
    for k in range(out.shape[0]):
        out[k] = src[k]
    _rescale(out)


@numba.njit(cache=True, nogil=True)
def _matvec(M, x, out):  # pragma: no cover - compiled
    """out[j] = sum_i M[i, j] x[i], i ascending; rescaled."""
    for j in range(out.shape[0]):
        out[j] = 0.0
    for i in range(M.shape[0]):
        xi = x[i]
        if xi != 0.0:
            for j in range(out.shape[0]):
                out[j] += M[i, j] * xi
    _rescale(out)


@numba.njit(cache=True, nogil=True)
def _mul_into(a, b):  # pragma: no cover - compiled
    for k in range(a.shape[0]):
        a[k] *= b[k]
    _rescale(a)


@numba.njit(cache=True, nogil=True)
def _leaf(emit_v, value, out):  # pragma: no cover - compiled
    """Leaf factor of an observed value; all ones for a missing (-1) one."""
    for z in range(out.shape[0]):
        out[z] = emit_v[z, value] if value >= 0 else 1.0
    _rescale(out)


@numba.njit(cache=True, nogil=True)
def _context_pass(ev, coded, order, parent, first_child, next_sibling, trans_t, emit, has, upctx, tmp):  # pragma: no cover
    """Upward messages under the context evidence alone (coded variables still unobserved).

    has[u]: u's subtree holds observed context; upctx[u]: its upward message. Without context in
    the subtree the message is exactly 1, so it is neither stored nor multiplied."""
    for s in range(order.shape[0] - 1, -1, -1):
        u = order[s]
        own = (not coded[u]) and ev[u] >= 0
        h = own
        c = first_child[u]
        while c >= 0:
            if has[c]:
                h = True
            c = next_sibling[c]
        has[u] = h
        if h and parent[u] >= 0:
            _leaf(emit[u], ev[u] if own else -1, tmp)
            c = first_child[u]
            while c >= 0:
                if has[c]:
                    _mul_into(tmp, upctx[c])
                c = next_sibling[c]
            _matvec(trans_t[u], tmp, upctx[u])


@numba.njit(cache=True, nogil=True)
def _times_context_children(first, next_sibling, has, upctx, v):  # pragma: no cover - compiled
    """v *= upctx[c] for c in the sibling chain starting at ``first`` whose subtree holds context."""
    c = first
    while c >= 0:
        if has[c]:
            _mul_into(v, upctx[c])
        c = next_sibling[c]


@numba.njit(cache=True, nogil=True)
def _absorb_finished(u, p, parent, slot, trans_t, prefix, up):  # pragma: no cover - compiled
    """Climb from u to p (exclusive): each subtree passed is complete, fold its upward message
    trans[u] @ prefix[u] into its parent's prefix. Node v's messages live in row slot[v]."""
    while u != p:
        _matvec(trans_t[u], prefix[slot[u]], up)
        _mul_into(prefix[slot[parent[u]]], up)
        u = parent[u]


@numba.njit(cache=True, nogil=True)
def _visit(s, order, parent, slot, next_sibling, prior, trans, trans_t, has, upctx, prefix, down, up, g):  # pragma: no cover
    """Enter the node at position s of the pre-order: finish the subtrees left behind and compute
    its downward message down[slot[b]] (the prior at the root)."""
    b = order[s]
    p = parent[b]
    db = down[slot[b]]
    if p < 0:
        _set_rescaled(db, prior)
        return b
    _absorb_finished(order[s - 1], p, parent, slot, trans_t, prefix, up)
    # Parent side: outer(p) * (p's leaf and finished children) * (later siblings' context).
    dp = down[slot[p]]
    pp = prefix[slot[p]]
    for k in range(g.shape[0]):
        g[k] = (prior[k] if parent[p] < 0 else dp[k]) * pp[k]
    _rescale(g)
    _times_context_children(next_sibling[b], next_sibling, has, upctx, g)
    _matvec(trans[b], g, db)
    return b


@numba.njit(cache=True, nogil=True)
def _mixture_weights(b, first_child, next_sibling, has, upctx, down_b, w):  # pragma: no cover - compiled
    """w = down[b] * (b's children's context messages), rescaled."""
    for k in range(w.shape[0]):
        w[k] = down_b[k]
    _times_context_children(first_child[b], next_sibling, has, upctx, w)
    _rescale(w)


@numba.njit(cache=True, nogil=True)
def _mix(eb, W, Q):  # pragma: no cover - compiled
    """Q[i, u] = sum_z W[i, z] eb[z, u] (z ascending) for each row i, summed over the states with
    W[i, z] >= 2**-32 (the rest change Q by < K 2**-32; the same decision on both sides). State
    by state over the rows, so each row eb[z] is loaded once for all of them."""
    for i in range(Q.shape[0]):
        for u in range(Q.shape[1]):
            Q[i, u] = 0.0
    for z in range(eb.shape[0]):
        ez = eb[z]
        for i in range(Q.shape[0]):
            wz = W[i, z]
            if wz >= _MIX_FLOOR:
                qi = Q[i]
                for u in range(qi.shape[0]):
                    qi[u] += wz * ez[u]


#: Images per thread task in the fast step. The 256-way mixture reads emit[b] (K x 256 floats,
#: 64 kB at K = 32: more than L1) once per task instead of once per image.
_BLOCK = 4


def _fast_step_body(k, prev, ev, coded, order, coded_pos, parent, slot, first_child, next_sibling, prior,
                    trans, trans_t, emit, has, upctx, prefix, down, scratch, q):  # pragma: no cover - compiled
    """Advance every image to the k-th coded variable: absorb the previous coded value ``prev``,
    visit the context nodes in between, and write that variable's conditional into q.

    The messages and the mixture (:func:`_mix`, over a block of images) are the naive path's,
    so both agree bit for bit."""
    B = q.shape[0]
    b = order[coded_pos[k]]
    eb = emit[b]
    for blk in numba.prange((B + _BLOCK - 1) // _BLOCK):
        i0 = blk * _BLOCK
        i1 = min(B, i0 + _BLOCK)
        for i in range(i0, i1):
            up = scratch[i, 0]
            g = scratch[i, 1]
            if k == 0:
                start = 0
            else:
                a = order[coded_pos[k - 1]]
                _leaf(emit[a], prev[i], prefix[i, slot[a]])
                start = coded_pos[k - 1] + 1
            for s in range(start, coded_pos[k] + 1):
                v = _visit(s, order, parent, slot, next_sibling, prior, trans, trans_t, has[i], upctx[i],
                           prefix[i], down[i], up, g)
                if s < coded_pos[k]:  # a context node: absorb its value (or nothing, if missing)
                    _leaf(emit[v], ev[i, v], prefix[i, slot[v]])
            _mixture_weights(b, first_child, next_sibling, has[i], upctx[i], down[i, slot[b]], scratch[i, 2])
        _mix(eb, scratch[i0:i1, 2], q[i0:i1])


# Two compilations of one body: threads for batches, none for a few images (launching a parallel
# region costs more than a small step). Images are independent, so both give identical floats.
_fast_step_par, _fast_step_ser = parallel_and_serial(_fast_step_body)
_PARALLEL_MIN_BATCH = 8


@numba.njit(cache=True, nogil=True, parallel=True)
def _start(ev, coded, order, parent, first_child, next_sibling, trans_t, emit, has, upctx):  # pragma: no cover
    for i in numba.prange(ev.shape[0]):
        tmp = np.empty(upctx.shape[2])
        _context_pass(ev[i], coded, order, parent, first_child, next_sibling, trans_t, emit, has[i], upctx[i], tmp)


@numba.njit(cache=True, nogil=True)
def _naive_one(x, coded, order, coded_pos, parent, first_child, next_sibling, prior, trans, trans_t, emit,
               q_out):  # pragma: no cover - compiled
    """Every coded variable's conditional for one image, each recomputed from scratch: the context
    pass, the leaf factors, every completed subtree's upward message and the downward messages
    along the path from the root -- O(D |p|) per image, the same products in the same order."""
    D = order.shape[0]
    K = prior.shape[0]
    has = np.zeros(D, dtype=np.bool_)
    upctx = np.ones((D, K))
    prefix = np.empty((D, K))
    down = np.empty((D, K))
    up = np.empty(K)
    g = np.empty(K)
    w = np.empty(K)
    tmp = np.empty(K)
    ident = np.arange(D)
    for k in range(coded_pos.shape[0]):
        target = coded_pos[k]
        _context_pass(x, coded, order, parent, first_child, next_sibling, trans_t, emit, has, upctx, tmp)
        for s in range(target):  # every node before the target, from scratch
            v = order[s]
            _leaf(emit[v], x[v], prefix[v])
        for s in range(1, target + 1):
            _absorb_finished(order[s - 1], parent[order[s]], parent, ident, trans_t, prefix, up)
        # Downward messages from the root to the target, along its ancestors.
        b = order[target]
        path = np.empty(D, dtype=np.int64)
        n = 0
        u = b
        while u >= 0:
            path[n] = u
            n += 1
            u = parent[u]
        for j in range(n - 1, -1, -1):
            c = path[j]
            p = parent[c]
            if p < 0:
                _set_rescaled(down[c], prior)
                continue
            for kk in range(K):
                g[kk] = (prior[kk] if parent[p] < 0 else down[p, kk]) * prefix[p, kk]
            _rescale(g)
            _times_context_children(next_sibling[c], next_sibling, has, upctx, g)
            _matvec(trans[c], g, down[c])
        _mixture_weights(b, first_child, next_sibling, has, upctx, down[b], w)
        _mix(emit[b], w.reshape(1, K), q_out[k:k + 1])


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------


class Stepper:
    """Walk a batch of images through the coding order, one coded variable per call (fast path).

    ``evidence`` (B, D) holds the context values (>= 0, or -1 where missing); entries of coded
    variables are ignored. ``q = s.step(prev)`` returns the (B, V) unnormalised conditionals of the
    next coded variable given the value of the previous one (``prev``: (B,) ints; ignored at the
    first call). The encoder passes true pixels, the decoder the ones it just decoded: both see the
    same floats.
    """

    def __init__(self, tables: CodingTables, evidence: np.ndarray):
        self.m = m = tables
        self.k = 0
        ev = np.ascontiguousarray(evidence, dtype=np.int64)
        if ev.ndim != 2 or ev.shape[1] != m.D:
            raise ValueError(f"evidence must have shape (B, {m.D})")
        B = ev.shape[0]
        self._ev = ev
        self._has = np.zeros((B, m.D), dtype=np.bool_)
        self._upctx = np.empty((B, m.D, m.K))
        # Messages of the nodes on the current root path only, one row per depth: a few kB per
        # image instead of D x K floats, so a block of images stays in cache.
        rows = int(m.depth.max()) + 1
        self._prefix = np.empty((B, rows, m.K))
        self._down = np.empty((B, rows, m.K))
        self._q = np.empty((B, m.V))
        self._scratch = np.empty((B, 3, m.K))
        self._none = np.zeros(B, dtype=np.int64)
        if (~m.coded).any():
            _start(ev, m.coded, m.order, m.parent, m.first_child, m.next_sibling, m.trans_t, m.emit,
                   self._has, self._upctx)

    def step(self, prev=None) -> np.ndarray:
        m = self.m
        if self.k >= len(m.coded_pos):
            raise IndexError("all coded variables already visited")
        prev = self._none if prev is None else np.ascontiguousarray(prev, dtype=np.int64)
        kernel = _fast_step_par if len(prev) >= _PARALLEL_MIN_BATCH else _fast_step_ser
        kernel(self.k, prev, self._ev, m.coded, m.order, m.coded_pos, m.parent, m.depth, m.first_child,
                   m.next_sibling, m.prior, m.trans, m.trans_t, m.emit, self._has, self._upctx,
                   self._prefix, self._down, self._scratch, self._q)
        self.k += 1
        return self._q


def fast_conditionals(tables: CodingTables, x: np.ndarray) -> np.ndarray:
    """(B, n_coded, V) conditionals in coding order for known images ``x`` (B, D)."""
    x = np.ascontiguousarray(x, dtype=np.int64)
    cv = tables.coded_vars
    out = np.empty((x.shape[0], len(cv), tables.V))
    s = Stepper(tables, x)
    for k in range(len(cv)):
        out[:, k] = s.step(x[:, cv[k - 1]] if k else None)
    return out


def naive_conditionals(tables: CodingTables, x: np.ndarray) -> np.ndarray:
    """(n_coded, V) conditionals in coding order for one image, each recomputed from scratch."""
    m = tables
    q = np.empty((len(m.coded_pos), m.V))
    _naive_one(np.ascontiguousarray(x, dtype=np.int64), m.coded, m.order, m.coded_pos, m.parent,
               m.first_child, m.next_sibling, m.prior, m.trans, m.trans_t, m.emit, q)
    return q

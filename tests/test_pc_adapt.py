"""Backward adaptation (models/pc/adapt.py): exact posterior counts, thread-count-free, coding."""
import numba
import numpy as np
import pytest

from neural_codecs.models.pc import hclt as H
from neural_codecs.models.pc.adapt import Adapter
from neural_codecs.models.pc.coder import coding_tables, fast_conditionals, naive_conditionals


def _fitted(D=12, K=5, n=300, seed=0):
    X = np.random.default_rng(seed).integers(0, 256, (n, D)).astype(np.uint8)
    m = H.fit_em(X, K, minibatch_epochs=2, batch_size=64, full_epochs=1, pseudocount=0.5)[0]
    t = coding_tables(m.parent, np.exp(m.log_prior), np.exp(m.log_trans), np.exp(m.log_emit))
    return m, t, X.astype(np.int64)


def test_counts_equal_the_training_e_step():
    """The coder-side posterior pass (probability domain, fixed order) computes the same expected
    counts as EM's E-step, to rounding."""
    m, t, X = _fitted()
    ad = Adapter(t, 10.0, 10**6)
    ad.observe(X)
    pc, tc, ec, _ = H.expected_counts(m, X.astype(np.uint8))
    inner = m.parent >= 0
    assert np.allclose(ad.prior_counts, pc, rtol=0, atol=1e-9)
    assert np.allclose(ad.trans_counts[inner], tc[inner], rtol=0, atol=1e-9)
    assert np.allclose(ad.emit_counts, ec, rtol=0, atol=1e-9)


def test_missing_values_are_marginalised():
    m, t, X = _fitted()
    X = X[:50].copy()
    X[:, 3] = -1
    ad = Adapter(t, 10.0, 10**6)
    ad.observe(X)
    assert ad.emit_counts[3].sum() == 0.0  # no value, no emission count
    assert np.isclose(ad.emit_counts.sum(), 50 * 11) and np.isclose(ad.prior_counts.sum(), 50)
    edge_mass = ad.trans_counts.sum((1, 2))
    assert np.allclose(edge_mass[m.parent >= 0], 50)


def test_thread_count_free_and_updates_on_schedule():
    _, t, X = _fitted(seed=1)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        try:
            ad = Adapter(t, 5.0, 64, decay=0.9)
            seen = []
            for lo in range(0, len(X), 40):
                ad.observe(X[lo:lo + 40])
                seen.append(ad.tables is t)
            results.append((ad.tables.emit.copy(), ad.tables.trans.copy(), ad.tables.prior.copy(), seen))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    (e1, t1, p1, s1), (e2, t2, p2, s2) = results
    assert np.array_equal(e1, e2) and np.array_equal(t1, t2) and np.array_equal(p1, p2)
    assert s1 == [True] + [False] * (len(s1) - 1)  # first update after 64 rows, i.e. the 2nd call
    assert np.allclose(e1.sum(2), 1) and np.allclose(t1[1:].sum(2), 1) and np.isclose(p1.sum(), 1)


def test_adapted_tables_code_like_the_naive_oracle():
    _, t, X = _fitted(seed=2)
    ad = Adapter(t, 3.0, 50)
    ad.observe(X[:200])
    x = X[200:204]
    fast = fast_conditionals(ad.tables, x)
    for i in range(len(x)):
        assert np.array_equal(fast[i], naive_conditionals(ad.tables, x[i]))


def test_adaptation_learns_the_data():
    """Tables fitted to the rows seen so far score later rows of the same source better."""
    rng = np.random.default_rng(3)
    D = 6
    base = rng.integers(0, 256, (1, D))
    X = (base + rng.integers(0, 3, (600, D))) % 256  # a narrow source the random model knows nothing of
    m = H.HCLT.random(np.array([-1, 0, 0, 1, 1, 2]), 4, seed=0)
    t = coding_tables(m.parent, np.exp(m.log_prior), np.exp(m.log_trans), np.exp(m.log_emit))
    ad = Adapter(t, 2.0, 100)
    ad.observe(X[:500])

    def bits(tables):
        q = fast_conditionals(tables, X[500:])
        p = np.take_along_axis(q, X[500:, tables.coded_vars][..., None], 2)[..., 0] / q.sum(2)
        return -np.log2(p).sum()

    assert bits(ad.tables) < 0.5 * bits(t)


@pytest.mark.parametrize("bad", [dict(strength=0.5), dict(every=0), dict(decay=0.0), dict(decay=1.5),
                                 dict(strength=float("nan"))])
def test_bad_parameters(bad):
    _, t, _ = _fitted(n=70)
    kw = dict(strength=2.0, every=10, decay=1.0) | bad
    with pytest.raises(ValueError):
        Adapter(t, **kw)

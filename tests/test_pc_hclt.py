"""HCLT model: exact inference against brute force, structure learning, EM, files.

Everything runs on tiny synthetic trees (D <= 9 pixels, K <= 3 states) so brute-force
enumeration of all hidden states is possible and the file stays fast.
"""
import itertools

import numba
import numpy as np
import pytest

from neural_codecs.models.pc import (
    HCLT,
    em_step,
    expected_counts,
    fit_em,
    learn_structure,
    topological_order,
    tree_height,
)


def _random_parent(D, rng):
    """A random tree: node labels shuffled, each node attached to an earlier one."""
    labels = rng.permutation(D)
    parent = np.full(D, -1, dtype=np.int64)
    for i in range(1, D):
        parent[labels[i]] = labels[rng.integers(i)]
    return parent


def _brute_loglik(m: HCLT, x, observed=None):
    """log sum over all K^D hidden states (and over unobserved pixels, via emission 1)."""
    if observed is None:
        observed = np.ones(m.D, dtype=bool)
    terms = []
    for z in itertools.product(range(m.K), repeat=m.D):
        lp = m.log_prior[z[m.root]]
        for v in range(m.D):
            if m.parent[v] >= 0:
                lp += m.log_trans[v, z[m.parent[v]], z[v]]
            if observed[v]:
                lp += m.log_emit[v, z[v], x[v]]
        terms.append(lp)
    return np.logaddexp.reduce(terms)


def _patterns(n, side=3, seed=0):
    """Noisy copies of three prototype images: structured data with a few strong clusters."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, size=(3, side * side))
    which = rng.integers(0, 3, size=n)
    noise = rng.integers(-12, 13, size=(n, side * side))
    return np.clip(protos[which] + noise, 0, 255).astype(np.uint8)


def _tiny_alphabet(m: HCLT) -> HCLT:
    """Same model with every emission supported on {0, 1} only."""
    e = m.log_emit.copy()
    e[:, :, 2:] = -np.inf
    e[:, :, :2] -= np.logaddexp(e[:, :, 0], e[:, :, 1])[:, :, None]
    return HCLT(m.parent, m.log_prior, m.log_trans, e)


# ---------------------------------------------------------------------------------------------
# Exact inference
# ---------------------------------------------------------------------------------------------


def test_loglik_and_marginals_match_brute_force():
    rng = np.random.default_rng(1)
    m = HCLT.random(_random_parent(6, rng), K=3, seed=2)
    x = rng.integers(0, 256, size=(4, 6), dtype=np.uint8)
    got = m.loglik(x)
    want = [_brute_loglik(m, row) for row in x]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)

    observed = rng.random((4, 6)) < 0.5
    got = m.marginal_loglik(x, observed)
    want = [_brute_loglik(m, row, obs) for row, obs in zip(x, observed)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)
    assert np.all(m.marginal_loglik(x, np.zeros_like(observed)) == pytest.approx(0.0, abs=1e-12))


def test_probabilities_sum_to_one_on_tiny_alphabet():
    m = _tiny_alphabet(HCLT.random(_random_parent(7, np.random.default_rng(3)), K=2, seed=4))
    xs = np.array(list(itertools.product([0, 1], repeat=7)), dtype=np.uint8)
    assert np.exp(m.loglik(xs)).sum() == pytest.approx(1.0, abs=1e-12)
    # Marginalising pixel 0 equals summing over its two values.
    obs = np.ones_like(xs, dtype=bool)
    obs[:, 0] = False
    lhs = m.marginal_loglik(xs[xs[:, 0] == 0], obs[xs[:, 0] == 0])
    rhs = np.logaddexp(m.loglik(xs[xs[:, 0] == 0]), m.loglik(xs[xs[:, 0] == 1]))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    # Impossible values give -inf, not NaN.
    assert m.loglik(np.full((1, 7), 7, dtype=np.uint8))[0] == -np.inf


def test_conditionals_normalised_consistent_and_chain_rule():
    rng = np.random.default_rng(5)
    D = 8
    m = HCLT.random(_random_parent(D, rng), K=3, seed=6)
    x = rng.integers(0, 256, size=D, dtype=np.uint8)
    order = rng.permutation(D)
    cond = m.conditionals_naive(x, order)
    assert cond.shape == (D, 256)
    np.testing.assert_allclose(cond.sum(axis=1), 1.0, rtol=0, atol=1e-12)

    observed = np.zeros((D + 1, D), dtype=bool)
    for t in range(D):
        observed[t + 1:, order[t]] = True
    marg = m.marginal_loglik(np.repeat(x[None], D + 1, axis=0), observed)
    picked = cond[np.arange(D), x[order]]
    np.testing.assert_allclose(picked, np.exp(np.diff(marg)), rtol=1e-10)
    assert np.log(picked).sum() == pytest.approx(m.loglik(x[None])[0], rel=1e-12)


def test_many_samples_match_one_at_a_time():
    """Several parallel tasks of the batch kernel give what single-sample calls give."""
    rng = np.random.default_rng(7)
    m = HCLT.random(_random_parent(9, rng), K=3, seed=8)
    x = rng.integers(0, 256, size=(100, 9), dtype=np.uint8)
    one = np.array([m.loglik(row[None])[0] for row in x])
    np.testing.assert_array_equal(m.loglik(x), one)


def test_input_validation():
    m = HCLT.random(_random_parent(4, np.random.default_rng(0)), K=2, seed=0)
    with pytest.raises(ValueError):
        m.loglik(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError):
        m.loglik(np.zeros((2, 5), dtype=np.uint8))
    with pytest.raises(ValueError):
        m.marginal_loglik(np.zeros((2, 4), dtype=np.uint8), np.ones((2, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        m.conditionals_naive(np.zeros(4, dtype=np.uint8), [0, 1, 1, 2])


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------


def test_structure_recovers_a_hidden_chain_and_roots_at_centre():
    rng = np.random.default_rng(9)
    D, N = 8, 3000
    chain = np.empty((N, D), dtype=np.int64)
    chain[:, 0] = rng.integers(0, 256, size=N)
    for i in range(1, D):
        chain[:, i] = np.clip(chain[:, i - 1] + rng.integers(-10, 11, size=N), 0, 255)
    perm = rng.permutation(D)  # chain position i lives in pixel perm[i]
    data = np.empty_like(chain)
    data[:, perm] = chain
    data = data.astype(np.uint8)

    parent = learn_structure(data)
    assert parent.dtype == np.int64 and parent.shape == (D,)
    got = {frozenset((v, int(p))) for v, p in enumerate(parent) if p >= 0}
    want = {frozenset((int(perm[i]), int(perm[i + 1]))) for i in range(D - 1)}
    assert got == want
    assert parent[min(perm[3], perm[4])] == -1  # centre of an 8-node path, smaller index
    assert tree_height(parent) == 4
    np.testing.assert_array_equal(learn_structure(data), parent)


def test_topological_order_and_height():
    parent = np.array([-1, 0, 0, 1, 1, 3], dtype=np.int64)
    np.testing.assert_array_equal(topological_order(parent), [0, 1, 2, 3, 4, 5])
    assert tree_height(parent) == 3
    assert tree_height(np.array([-1])) == 0
    for bad in ([-1, 2, 1], [0, 1], [-1, -1], [-1, 5]):
        with pytest.raises(ValueError):
            topological_order(np.array(bad))


# ---------------------------------------------------------------------------------------------
# EM
# ---------------------------------------------------------------------------------------------


def test_expected_counts_are_consistent():
    data = _patterns(50)
    m = HCLT.random(learn_structure(data), K=3, seed=0)
    pc, tc, ec, ll = expected_counts(m, data)
    np.testing.assert_allclose(ll, m.loglik(data), rtol=1e-13)
    assert pc.sum() == pytest.approx(50)
    edges = m.parent >= 0
    np.testing.assert_allclose(tc[edges].sum(axis=(1, 2)), 50, rtol=1e-12)
    np.testing.assert_allclose(ec.sum(axis=(1, 2)), 50, rtol=1e-12)
    assert np.all(tc[~edges] == 0)
    # Emission counts sit only on the values that occur.
    seen = np.zeros((m.D, 256), dtype=bool)
    seen[np.arange(m.D)[None, :], data] = True
    assert np.all(ec.sum(axis=1)[~seen] == 0)


def _penalised(m: HCLT, data, alpha):
    """The objective EM with pseudocount alpha maximises: log-likelihood + alpha * sum log theta."""
    ll = m.loglik(data).sum()
    if alpha == 0:  # parameters may be log 0 = -inf there; 0 * -inf would be NaN
        return ll
    edges = m.parent >= 0
    logs = [m.log_prior, m.log_trans[edges], m.log_emit]
    return ll + alpha * sum(float(np.sum(a)) for a in logs)


def test_full_batch_em_is_monotone():
    data = _patterns(300)
    m = HCLT.random(learn_structure(data), K=3, seed=1)
    for alpha in (0.0, 0.5):
        cur, obj = m, [_penalised(m, data, alpha)]
        for _ in range(6):
            cur, _ = em_step(cur, data, alpha)
            obj.append(_penalised(cur, data, alpha))
        assert np.all(np.diff(obj) >= -1e-9 * abs(obj[0])), obj
        assert obj[-1] > obj[0] + 1.0

    model, hist = fit_em(data, 3, minibatch_epochs=3, batch_size=64, full_epochs=5,
                         pseudocount=0.0, seed=0)
    assert len(hist) == 8
    assert np.all(np.diff(hist[3:]) >= -1e-9 * abs(hist[3]))
    assert model.loglik(data).mean() >= hist[-1] - 1e-9 * abs(hist[-1])
    assert hist[-1] > hist[0]


def test_training_is_deterministic_and_thread_count_free():
    data = _patterns(200, seed=3)
    kw = dict(minibatch_epochs=2, batch_size=50, full_epochs=2, pseudocount=0.1, seed=11)
    seen = []
    m1, h1 = fit_em(data, 3, progress=lambda e, total, bpd: seen.append((e, total, bpd)), **kw)
    m2, h2 = fit_em(data, 3, **kw)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        m3, h3 = fit_em(data, 3, **kw)
    finally:
        numba.set_num_threads(old)
    for m in (m2, m3):
        for name in ("parent", "log_prior", "log_trans", "log_emit"):
            np.testing.assert_array_equal(getattr(m1, name), getattr(m, name))
    assert h1 == h2 == h3
    assert [s[:2] for s in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert seen[-1][2] == pytest.approx(-h1[-1] / (9 * np.log(2)))
    # A different seed gives a different model.
    m4, _ = fit_em(data, 3, **{**kw, "seed": 12})
    assert not np.array_equal(m1.log_emit, m4.log_emit)
    # Pseudocounts keep every value codable.
    assert np.all(np.isfinite(m1.log_emit))


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    m = HCLT.random(_random_parent(6, np.random.default_rng(0)), K=3, seed=0)
    path = tmp_path / "m.npz"
    m.save(path)
    r = HCLT.load(path)
    for name in ("parent", "log_prior", "log_trans", "log_emit"):
        np.testing.assert_array_equal(getattr(m, name), getattr(r, name))
        assert getattr(r, name).dtype == getattr(m, name).dtype
    x = np.random.default_rng(1).integers(0, 256, (5, 6), dtype=np.uint8)
    np.testing.assert_array_equal(m.loglik(x), r.loglik(x))


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_bad_files_raise_value_error(tmp_path):
    m = HCLT.random(_random_parent(5, np.random.default_rng(0)), K=2, seed=0)
    good = dict(version=np.int64(1), parent=m.parent, log_prior=m.log_prior,
                log_trans=m.log_trans, log_emit=m.log_emit)
    bad = {
        "garbage": None,
        "missing": {k: v for k, v in good.items() if k != "log_emit"},
        "shape": {**good, "log_emit": m.log_emit[:, :, :128]},
        "dtype": {**good, "log_prior": m.log_prior.astype(np.float32)},
        "unnormalised": {**good, "log_prior": m.log_prior + 1.0},
        "nan": {**good, "log_trans": np.full_like(m.log_trans, np.nan)},
        "not_a_tree": {**good, "parent": np.zeros(5, dtype=np.int64)},
        "version": {**good, "version": np.int64(99)},
        "pickled": {**good, "parent": np.array([object()], dtype=object)},
    }
    for name, arrays in bad.items():
        path = tmp_path / f"{name}.npz"
        if arrays is None:
            path.write_bytes(b"definitely not a zip file")
        else:
            _npz(path, **arrays)
        with pytest.raises(ValueError, match=name + ".npz"):
            HCLT.load(path)

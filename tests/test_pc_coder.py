"""The coding kernels: exact conditionals, fast == naive bit for bit, context handling."""
import itertools

import numpy as np
import pytest

from neural_codecs.models.pc import HCLT
from neural_codecs.models.pc.coder import coding_tables, fast_conditionals, naive_conditionals, dfs_preorder

D, K, V = 7, 3, 4
PARENT = np.array([3, 3, -1, 2, 2, 4, 4])


def _random_model(seed):
    rng = np.random.default_rng(seed)
    return (rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=(D, K)),
            rng.dirichlet(np.ones(V), size=(D, K)))


def _brute_marginal(x, prior, trans, emit):
    """p(observed part of x) by enumerating every latent configuration (x = -1: unobserved)."""
    total = 0.0
    for z in itertools.product(range(K), repeat=D):
        p = 1.0
        for v in range(D):
            p *= prior[z[v]] if PARENT[v] < 0 else trans[v, z[PARENT[v]], z[v]]
            if x[v] >= 0:
                p *= emit[v, z[v], x[v]]
        total += p
    return total


@pytest.mark.parametrize("coded", [[1] * 7, [1, 0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 1, 0, 1]])
def test_conditionals_exact_and_fast_equals_naive(coded):
    coded = np.array(coded, bool)
    prior, trans, emit = _random_model(sum(coded))
    tables = coding_tables(PARENT, prior, trans, emit, coded)
    rng = np.random.default_rng(1)
    for trial in range(3):
        x = rng.integers(0, V, D)
        if trial == 2:  # some context missing (outside the image)
            x[~coded & (rng.random(D) < 0.5)] = -1
        obs = np.where(coded, -1, x)
        exact = []
        for v in tables.coded_vars:
            m = np.array([_brute_marginal(np.where(np.arange(D) == v, u, obs), prior, trans, emit) for u in range(V)])
            exact.append(m / m.sum())
            obs[v] = x[v]
        fast = fast_conditionals(tables, x[None])[0]
        naive = naive_conditionals(tables, x)
        assert np.allclose(fast / fast.sum(1, keepdims=True), exact, rtol=0, atol=1e-12)
        assert np.array_equal(fast, naive)  # bit for bit: the same products in the same order


def test_agrees_with_log_domain_oracle():
    """An independent implementation (the EM code's log-domain naive conditionals) agrees."""
    rng = np.random.default_rng(3)
    Dm = 12
    parent = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, Dm)])
    model = HCLT.random(parent, 4, seed=5)
    tables = coding_tables(parent, np.exp(model.log_prior), np.exp(model.log_trans), np.exp(model.log_emit))
    x = rng.integers(0, 256, Dm).astype(np.uint8)
    fast = fast_conditionals(tables, x[None].astype(np.int64))[0]
    ref = model.conditionals_naive(x, tables.order)
    assert np.allclose(fast / fast.sum(1, keepdims=True), ref, rtol=1e-9, atol=1e-15)


def test_batch_rows_are_independent():
    prior, trans, emit = _random_model(0)
    tables = coding_tables(PARENT, prior, trans, emit)
    x = np.random.default_rng(2).integers(0, V, (5, D))
    both = fast_conditionals(tables, x)
    for i in range(5):
        assert np.array_equal(both[i], fast_conditionals(tables, x[i:i + 1])[0])


def test_validation():
    prior, trans, emit = _random_model(0)
    with pytest.raises(ValueError, match="2\\*\\*-100"):
        coding_tables(PARENT, prior, trans, np.zeros_like(emit))
    with pytest.raises(ValueError, match="root"):
        dfs_preorder(np.array([-1, -1, 0]))
    with pytest.raises(ValueError, match="tree"):
        dfs_preorder(np.array([-1, 2, 1]))
    assert dfs_preorder(PARENT).tolist() == [2, 3, 0, 1, 4, 5, 6]

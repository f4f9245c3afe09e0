"""neural_codecs.models.pc: probabilistic circuits for pcz -- Hidden Chow-Liu Trees learned by EM.

The model half of pcz: structure learning, exact (marginal) likelihoods, naive conditionals as
a reference oracle, and EM training. No file formats beyond the model's own ``.npz``.
"""
from .hclt import (
    HCLT,
    bits_per_dim,
    em_step,
    expected_counts,
    fit_em,
    learn_structure,
    m_step,
    topological_order,
    tree_height,
)

__all__ = [
    "HCLT",
    "bits_per_dim",
    "em_step",
    "expected_counts",
    "fit_em",
    "learn_structure",
    "m_step",
    "topological_order",
    "tree_height",
]

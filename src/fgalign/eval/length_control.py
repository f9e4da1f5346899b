"""Length-controlled win rate, in the manner of AlpacaEval 2 (Dubois et al., 2024).

A token reward model carries a length term, and so can a judge: a policy may buy raw wins by answering
longer or shorter. Fit a logistic regression of the judge's verdict on the length difference,

    P(policy wins) = σ(θ₀ + θ₁ · tanh(Δ / sd(Δ))),    Δ = len(policy) − len(reference),

and report σ(θ₀), the win probability the same judge would give at zero length difference. A tie (½)
enters as half a win and half a loss. With no length spread, or a one-sided verdict, it is the raw rate.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def length_controlled_win_rate(wins: Sequence[float], policy_lengths: Sequence[float],
                               reference_lengths: Sequence[float], c: float = 10.0) -> float:
    """σ(θ₀) of the fit above; `c` is the inverse L2 strength (light: it only keeps separable data finite)."""
    from sklearn.linear_model import LogisticRegression

    w = np.asarray(wins, dtype=float)
    delta = np.asarray(policy_lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    sd = delta.std()
    if sd == 0 or w.min() == w.max():
        return float(w.mean())
    x = np.tanh(delta / sd)[:, None]
    # Each verdict w ∈ [0, 1] becomes a win with weight w and a loss with weight 1 − w.
    X = np.concatenate([x, x])
    y = np.concatenate([np.ones_like(w), np.zeros_like(w)])
    weight = np.concatenate([w, 1.0 - w])
    keep = weight > 0
    model = LogisticRegression(C=c).fit(X[keep], y[keep], sample_weight=weight[keep])
    return float(1.0 / (1.0 + np.exp(-model.intercept_[0])))


def bootstrap_lc_interval(wins: Sequence[float], policy_lengths: Sequence[float], reference_lengths: Sequence[float],
                          n_boot: int = 300, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the length-controlled win rate (prompts resampled, model refit)."""
    w, a, b = (np.asarray(v, dtype=float) for v in (wins, policy_lengths, reference_lengths))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        i = rng.integers(0, len(w), size=len(w))
        stats.append(length_controlled_win_rate(w[i], a[i], b[i]))
    return float(np.quantile(stats, (1 - level) / 2)), float(np.quantile(stats, (1 + level) / 2))

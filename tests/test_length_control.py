"""Length-controlled win rate: a length change cannot buy wins; without a length effect it is the raw rate."""
import numpy as np
import pytest

from fgalign.eval.length_control import bootstrap_lc_interval, length_controlled_win_rate


def test_wins_bought_by_length_are_removed():
    """The judge prefers the longer answer and nothing else: raw rate high, LC rate ~½."""
    rng = np.random.default_rng(0)
    ref = rng.integers(8, 16, size=600).astype(float)
    pol = ref + rng.normal(3.0, 3.0, size=600)  # mostly longer
    p_win = 1 / (1 + np.exp(-1.5 * np.tanh((pol - ref) / 3.0)))
    wins = (rng.random(600) < p_win).astype(float)
    assert wins.mean() > 0.6
    assert length_controlled_win_rate(wins, pol, ref) == pytest.approx(0.5, abs=0.06)


def test_no_length_effect_keeps_the_raw_rate():
    rng = np.random.default_rng(1)
    ref = rng.integers(8, 16, size=800).astype(float)
    pol = ref + rng.normal(0.0, 3.0, size=800)
    wins = (rng.random(800) < 0.7).astype(float)
    assert length_controlled_win_rate(wins, pol, ref) == pytest.approx(wins.mean(), abs=0.04)


def test_ties_and_degenerate_inputs():
    assert length_controlled_win_rate([0.5, 0.5, 0.5], [3, 4, 5], [4, 4, 4]) == 0.5  # one-sided verdicts
    assert length_controlled_win_rate([1, 0, 1], [4, 4, 4], [4, 4, 4]) == pytest.approx(2 / 3)  # no spread
    lo, hi = bootstrap_lc_interval([1, 0, 0.5, 1, 1, 0] * 10, list(range(60)), [30] * 60, n_boot=50)
    assert 0.0 <= lo <= hi <= 1.0

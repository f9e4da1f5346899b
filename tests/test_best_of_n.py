"""Best-of-n: the KL bound, the curve's picks, the per-mistake AUC, and the command end to end."""
import json
import math

import numpy as np
import pytest

from fgalign.eval.best_of_n import best_of_n_curve, kl_bound, mistake_sensitivity, ns_up_to


def test_kl_bound_and_ns():
    assert kl_bound(1) == 0.0
    assert kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    assert ns_up_to(16) == [1, 2, 4, 8, 16]
    assert ns_up_to(6) == [1, 2, 4, 6]
    assert ns_up_to(1) == [1]


def test_curve_picks_the_top_scored_among_the_first_n():
    wins = np.array([[0.0, 1.0, 0.5, 1.0],
                     [0.5, 0.0, 1.0, 0.0]])  # (P, N)
    # a perfect ranking (score = win) climbs; an inverted one falls; ties go to the first candidate
    up = best_of_n_curve(wins, wins, [1, 2, 4])
    assert [p["win_rate"] for p in up] == [0.25, 0.75, 1.0]
    down = best_of_n_curve(-wins, wins, [1, 2, 4])
    assert [p["win_rate"] for p in down] == [0.25, 0.0, 0.0]
    flat = best_of_n_curve(np.zeros_like(wins), wins, [1, 4])
    assert [p["win_rate"] for p in flat] == [0.25, 0.25]
    assert up[2]["kl_bound"] == pytest.approx(kl_bound(4))


class _CountingTask:
    """A response's mistakes are its count of 'x' (kind a) and of 'y' (kind b)."""

    def diagnose(self, prompt, response):
        return {"a": response.count("x"), "b": response.count("y")}


def test_mistake_sensitivity_tells_which_kind_a_score_sees():
    prompts = ["p"] * 6
    candidates = [["ok", "x", "y"]] * 6
    # this score sees kind a (x scores lowest) but not kind b (y scores like a clean answer)
    scores = np.array([[1.0, -1.0, 1.0]] * 6)
    result = mistake_sensitivity(_CountingTask(), prompts, candidates, scores)
    assert result["a"] == {"auc": 1.0, "n": 6, "auc_one_more": 1.0, "n_pairs": 36}
    assert result["b"] == {"auc": 0.5, "n": 6, "auc_one_more": 0.5, "n_pairs": 36}
    few = mistake_sensitivity(_CountingTask(), prompts[:2], candidates[:2], scores[:2])
    assert few["a"]["auc"] is None  # fewer than 5 examples: no figure rather than a noisy one
    assert few["a"]["auc_one_more"] is None and few["a"]["n_pairs"] == 4  # fewer than 25 pairs


def test_one_more_mistake_auc_reads_answers_that_all_hold_mistakes():
    """Long answers are never clean: compare samples that differ by one mistake of a kind and nothing else."""
    prompts = ["p"] * 6
    candidates = [["xy", "xxy", "xyy", "xxyy"]] * 6
    # a second x costs 1, a second y costs nothing; "xxyy" differs from "xy" in two counts, so it pairs only
    # with "xyy" (one more x) and "xxy" (one more y)
    scores = np.array([[0.0, -1.0, 0.0, -1.0]] * 6)
    result = mistake_sensitivity(_CountingTask(), prompts, candidates, scores)
    assert result["a"]["auc"] is None and result["a"]["n"] == 0  # no clean sample
    assert result["a"]["auc_one_more"] == 1.0 and result["a"]["n_pairs"] == 2 * 36
    assert result["b"]["auc_one_more"] == 0.5 and result["b"]["n_pairs"] == 2 * 36
    inverted = mistake_sensitivity(_CountingTask(), prompts, candidates, -scores)
    assert inverted["a"]["auc_one_more"] == 0.0


def test_best_of_n_command(tiny_policy_dir, tmp_path):
    from fgalign.cli import main
    from fgalign.models.reward import build_reward_model

    for level in ("token", "sequence"):
        build_reward_model(tiny_policy_dir, level, "mistake-bce" if level == "token" else "bt").save(tmp_path / level)
    out = tmp_path / "bon.json"
    argv = ["best-of-n", "--policy", str(tiny_policy_dir), "--rms", str(tmp_path / "token"), str(tmp_path / "sequence"),
            "--n", "3", "--num-prompts", "12", "--max-new-tokens", "8", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    names = list(result["curves"])
    assert names[0] == "oracle (task score)"
    assert {f"{tmp_path / 'token'} (token sum)", f"{tmp_path / 'token'} (sequence)",
            f"{tmp_path / 'sequence'} (sequence)"} <= set(names)
    for curve in result["curves"].values():
        assert [p["n"] for p in curve] == [1, 2, 3]
        assert all(0.0 <= p["win_rate"] <= 1.0 for p in curve)
    oracle = [p["win_rate"] for p in result["curves"]["oracle (task score)"]]
    assert oracle == sorted(oracle)  # keeping the gold-best of more samples never loses more
    assert (tmp_path / "bon.json.config.json").exists()
    assert main(argv) == 2  # an existing result is never overwritten silently
    assert main(argv[:-4] + ["--n", "0"]) == 2

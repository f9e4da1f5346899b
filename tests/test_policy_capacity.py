"""Benchmarks that diagnose a limit: policy_capacity (optimiser or policy?) and rm_count_probe (does an RM count?)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("policy_capacity", ROOT / "benchmarks" / "policy_capacity.py")
capacity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capacity)


class _Scored:
    """A task whose score is the response's length in characters: the best pick is the longest sample."""

    def score(self, prompt, response):
        return len(response)


def test_picks_are_the_best_and_fine_tuning_fits_them(tiny_policy_dir):
    from fgalign.models.policy import load_causal_lm, load_tokenizer
    from fgalign.sampling.rollout import SamplingConfig
    from fgalign.train.sft import _Collator, tokenize_examples

    tok, model = load_tokenizer(tiny_policy_dir), load_causal_lm(tiny_policy_dir)
    prompts = ["List 3 fruits:", "List 2 colors:"] * 4
    picks, mean_best = capacity.best_of_n_picks(model, tok, _Scored(), prompts, 4, SamplingConfig(max_new_tokens=8), 0)
    assert [p for p, _ in picks] == prompts
    assert mean_best == sum(len(r) for _, r in picks) / len(picks)

    batch = _Collator(tok.pad_token_id)(tokenize_examples(tok, picks, 96))
    before = model(**batch).loss.item()
    tuned = capacity.fine_tune(model, tok, picks, epochs=5, lr=1e-3, batch=4, seed=0)
    with torch.no_grad():
        assert tuned(**batch).loss.item() < before - 0.1


def test_script_end_to_end(tiny_policy_dir, tmp_path):
    out = tmp_path / "cap"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "policy_capacity.py"), "--policy", str(tiny_policy_dir),
                    "--prompts", "8", "--n", "2", "--epochs", "1", "--test-prompts", "8", "--max-new-tokens", "8",
                    "--out", str(out)], check=True, capture_output=True)
    result = json.loads((out / "results.json").read_text())
    assert result["rows"][0]["epochs"] == 1 and 0.0 <= result["rows"][0]["win_rate"] <= 1.0


def test_count_probe_builds_the_three_answers_and_scores_them(tiny_policy_dir, tmp_path):
    """benchmarks/rm_count_probe.py on an untrained token RM: N, N−1 and N+1 items, one of each per prompt."""
    from fgalign.models.reward import build_reward_model

    build_reward_model(tiny_policy_dir, "token", "mistake-bce").save(tmp_path / "rm")
    spec = importlib.util.spec_from_file_location("rm_count_probe", ROOT / "benchmarks" / "rm_count_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    result = probe.probe(str(tmp_path / "rm"), prompts=12, seed=0)
    assert {k: r["n"] for k, r in result.items()} == {"complete": 12, "one fewer": 12, "one more": 12}
    for kind in ("one fewer", "one more"):
        assert 0.0 <= result[kind]["auc_token_sum"] <= 1.0

"""Policy and value updated side by side in two threads give the parameters of the serial update."""
import copy
import dataclasses

import pytest
import torch
from ppo_fakes import FakeTask, TableRewardModel

import fgalign.rl.update as update
from fgalign.models.policy import load_causal_lm, load_tokenizer
from fgalign.models.value import ValueModel
from fgalign.models.side_by_side import can_run_side_by_side, run_side_by_side
from fgalign.rl.update import PPORewardSettings, TrainingDiverged, UpdateSettings, make_experience, ppo_update
from fgalign.sampling.hf import generate
from fgalign.sampling.rollout import SamplingConfig


@pytest.fixture()
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _setup(policy_dir):
    tok = load_tokenizer(policy_dir)
    torch.manual_seed(0)
    policy, ref = load_causal_lm(policy_dir), load_causal_lm(policy_dir).eval()
    value = ValueModel.from_backbone_dir(policy_dir, len(tok))
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in FakeTask().prompts("train", 8, 0)]
    rollout = generate(policy, prompts, tok.eos_token_id, tok.pad_token_id, SamplingConfig(max_new_tokens=8))
    scores = TableRewardModel(len(tok)).score_responses(rollout.prompt_lists(), rollout.response_lists(), tok)
    exp = make_experience(rollout, scores, policy, ref, value, 0.1, PPORewardSettings(reward="sequence"), gamma=1.0,
                          lam=0.95, whiten_advantages=True, temperature=1.0, micro_batch=4)
    return policy, value, exp


def _update(policy, value, exp, parallel, monkeypatch):
    policy, value = copy.deepcopy(policy), copy.deepcopy(value)
    used = []
    monkeypatch.setattr(update, "can_run_side_by_side", lambda models, acc=None, uses_rng=True: parallel)
    monkeypatch.setattr(update, "run_side_by_side", lambda a, b, p: used.append(p) or run_side_by_side(a, b, p))
    opts = (torch.optim.AdamW(policy.parameters(), lr=1e-3), torch.optim.AdamW(value.parameters(), lr=1e-3))
    torch.manual_seed(123)
    # Serial on 1 thread: the same kernels as each side-by-side thread runs, so the results are bitwise equal.
    threads = torch.get_num_threads()
    torch.set_num_threads(threads if parallel else 1)
    stats = ppo_update(exp, policy, value, opts, UpdateSettings(ppo_epochs=2, minibatches=2))
    torch.set_num_threads(threads)
    assert used and set(used) == {parallel}
    return stats, policy.state_dict(), value.state_dict()


def test_side_by_side_update_equals_serial(tiny_policy_dir, two_threads, monkeypatch):
    policy, value, exp = _setup(tiny_policy_dir)
    assert can_run_side_by_side((policy, value))  # 2 threads, CPU, one process, no dropout
    s_stats, s_policy, s_value = _update(policy, value, exp, False, monkeypatch)
    p_stats, p_policy, p_value = _update(policy, value, exp, True, monkeypatch)
    assert p_stats == s_stats and s_stats["policy_loss"] != 0
    for serial, side in ((s_policy, p_policy), (s_value, p_value)):
        assert all(torch.equal(side[k], serial[k]) for k in serial)
    assert torch.get_num_threads() == 2  # restored


def test_side_by_side_is_off_for_one_thread_or_dropout(tiny_policy_dir, two_threads):
    policy, value, _ = _setup(tiny_policy_dir)
    torch.set_num_threads(1)
    assert not can_run_side_by_side((policy, value))
    torch.set_num_threads(2)
    policy.transformer.drop.p = 0.1
    assert not can_run_side_by_side((policy, value))


def test_a_non_finite_value_loss_stops_the_side_by_side_update(tiny_policy_dir, two_threads, monkeypatch):
    policy, value, exp = _setup(tiny_policy_dir)
    before = copy.deepcopy(value.state_dict())
    bad = dataclasses.replace(exp, returns=torch.full_like(exp.returns, float("nan")))
    monkeypatch.setattr(update, "can_run_side_by_side", lambda models, acc=None, uses_rng=True: True)
    opts = (torch.optim.AdamW(policy.parameters(), lr=1e-3), torch.optim.AdamW(value.parameters(), lr=1e-3))
    with pytest.raises(TrainingDiverged, match="loss"):
        ppo_update(bad, policy, value, opts, UpdateSettings(ppo_epochs=1, minibatches=2))
    assert all(torch.equal(value.state_dict()[k], before[k]) for k in before)  # no optimizer step
    assert torch.get_num_threads() == 2


def test_experience_scored_side_by_side_equals_serial(tiny_policy_dir, two_threads, monkeypatch):
    policy, value, exp = _setup(tiny_policy_dir)  # scored side by side (2 threads, CPU, no RNG in eval mode)
    ref = load_causal_lm(tiny_policy_dir).eval()
    tok = load_tokenizer(tiny_policy_dir)
    scores = TableRewardModel(len(tok)).score_responses(exp.rollout.prompt_lists(), exp.rollout.response_lists(), tok)
    monkeypatch.setattr(update, "can_run_side_by_side", lambda models, acc=None, uses_rng=True: False)
    torch.set_num_threads(1)
    serial = make_experience(exp.rollout, scores, policy, ref, value, 0.1, PPORewardSettings(reward="sequence"),
                             gamma=1.0, lam=0.95, whiten_advantages=True, temperature=1.0, micro_batch=4)
    for name in ("logprobs", "ref_logprobs", "values", "rewards", "advantages", "returns"):
        assert torch.equal(getattr(serial, name), getattr(exp, name)), name

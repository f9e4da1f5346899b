"""One RewardSettings: `fgalign ppo`, the verl plug-in and best-of-n turn the same RM output into the same rewards.

The verl plug-in runs in .venv-verl; here, where verl is not installed, it is imported against stand-ins for the
verl classes it subclasses: the reward path compared below (`score_rows`, then `dense_rm_scores`, which is what
`place_dense_rewards` runs on verl's batch) touches none of them.
"""
import importlib
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ppo_fakes import FakeTask, TableRewardModel

from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm
from fgalign.models.value import ValueModel
from fgalign.rl.rewards import REWARD_MODES, REWARD_SCALES, TOKEN_CENTERS, RewardSettings, rm_rewards
from fgalign.rl.trainer import PPOConfig
from fgalign.rl.update import make_experience
from fgalign.sampling.hf import generate
from fgalign.sampling.rollout import SamplingConfig

VERL_MODULES = {  # module -> names the plug-in imports from it
    "verl": ["DataProto"],
    "verl.experimental": [],
    "verl.experimental.agent_loop": ["AgentLoopManager"],
    "verl.experimental.agent_loop.agent_loop": ["AgentLoopOutput"],
    "verl.experimental.agent_loop.single_turn_agent_loop": ["SingleTurnAgentLoop"],
    "verl.experimental.reward_loop": [],
    "verl.experimental.reward_loop.reward_manager": [],
    "verl.experimental.reward_loop.reward_manager.base": ["RewardManagerBase"],
    "verl.utils": [],
    "verl.utils.ray_utils": ["auto_await"],
}


@pytest.fixture
def plugin(monkeypatch):
    """fgalign.integrations.verl, with verl itself where it is installed and stand-ins where it is not."""
    try:
        import verl  # noqa: F401
    except ImportError:
        from pydantic import BaseModel

        for name, attrs in VERL_MODULES.items():
            module = types.ModuleType(name)
            for attr in attrs:
                setattr(module, attr, (lambda f: f) if attr == "auto_await" else
                        type(attr, (BaseModel,) if attr == "AgentLoopOutput" else (), {}))
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.delitem(sys.modules, "fgalign.integrations.verl", raising=False)
        yield importlib.import_module("fgalign.integrations.verl")
        sys.modules.pop("fgalign.integrations.verl", None)  # built on stand-ins: not for any later import
        return
    yield importlib.import_module("fgalign.integrations.verl")


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    """A PPO rollout of a tiny policy (responses of several lengths, some cut at the limit) and its models."""
    torch.manual_seed(0)
    cfg = TinyModelConfig(n_layer=1, d_model=32, n_head=2, max_len=64)
    policy, ref = build_tiny_causal_lm(cfg, tiny_tokenizer), build_tiny_causal_lm(cfg, tiny_tokenizer)
    ref.load_state_dict(policy.state_dict())
    value = ValueModel(build_tiny_causal_lm(cfg, tiny_tokenizer).transformer)
    prompts = [tiny_tokenizer(p, add_special_tokens=False)["input_ids"] for p in FakeTask().prompts("train", 12, 0)]
    eos = tiny_tokenizer.eos_token_id
    # A random policy almost never ends: EOS made likelier while sampling, so that the lengths differ.
    hook = policy.lm_head.register_forward_hook(lambda m, i, out: out.index_add(
        -1, torch.tensor([eos]), torch.full((*out.shape[:-1], 1), 4.0)))
    rollout = generate(policy, prompts, tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id,
                       SamplingConfig(max_new_tokens=10))
    hook.remove()
    lengths = rollout.response_mask.sum(1)
    assert len(set(lengths.tolist())) > 1, "the batch must hold responses of several lengths"
    return SimpleNamespace(rollout=rollout, policy=policy, ref=ref, value=value, tokenizer=tiny_tokenizer,
                           rm=TableRewardModel(len(tiny_tokenizer)))


def ppo_rm_rewards(batch, **options):
    """The RM's part of the reward in `fgalign ppo` (`Experience.rm_rewards`), with PPOConfig's defaults."""
    cfg = PPOConfig(policy="sft", rm="rm", out="out", **options)
    rm_out = batch.rm.score_responses(batch.rollout.prompt_lists(), batch.rollout.response_lists())
    exp = make_experience(batch.rollout, rm_out, batch.policy, batch.ref, batch.value, beta=0.1, rs=cfg, gamma=1.0,
                          lam=0.95, whiten_advantages=True, temperature=1.0, micro_batch=16)
    return exp.rm_rewards


def verl_rm_scores(plugin, batch, **options):
    """verl's `rm_scores` from the plug-in's settings (`reward.reward_kwargs.fgalign`) and its reward workers' rows."""
    config = SimpleNamespace(reward={"reward_kwargs": {"fgalign": {"rm": "rm", **options}}})
    settings = plugin.FgalignVerlSettings.from_verl_config(config)
    mask = batch.rollout.response_mask
    tok, prefix, seq = plugin.score_rows(batch.rm, batch.tokenizer, batch.rollout.prompt_lists(),
                                         batch.rollout.response_lists(), width=mask.shape[1])
    return plugin.dense_rm_scores(settings, torch.as_tensor(tok), torch.as_tensor(prefix), torch.as_tensor(seq), mask)


def test_verl_plugin_gives_fgalign_ppos_rewards_with_the_defaults(plugin, batch):
    """Nothing set on either side: the same rewards (before, the plug-in left out ppo's median centring)."""
    torch.testing.assert_close(verl_rm_scores(plugin, batch), ppo_rm_rewards(batch), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reward", REWARD_MODES)
@pytest.mark.parametrize("scale", REWARD_SCALES)
@pytest.mark.parametrize("center", TOKEN_CENTERS)
def test_verl_plugin_gives_fgalign_ppos_rewards_for_every_setting(plugin, batch, reward, scale, center):
    options = dict(reward=reward, reward_scale=scale, token_center=center, alpha=0.5)
    if (problem := RewardSettings(reward, scale, 0.5, center).problem()) is not None:
        with pytest.raises(Exception, match=problem.split("'")[0]):  # refused by both, with one message
            verl_rm_scores(plugin, batch, **options)
        with pytest.raises(Exception, match=problem.split("'")[0]):
            ppo_rm_rewards(batch, **options)
        return
    torch.testing.assert_close(verl_rm_scores(plugin, batch, **options), ppo_rm_rewards(batch, **options),
                               atol=1e-6, rtol=1e-5)


def test_the_plugin_has_ppos_reward_options_and_defaults(plugin):
    from dataclasses import fields

    ours = {f.name: f.default for f in fields(RewardSettings)}
    theirs = {f.name: f.default for f in fields(plugin.FgalignVerlSettings)}
    ppo = {f.name: f.default for f in fields(PPOConfig)}
    assert ours.items() <= theirs.items() and ours.items() <= ppo.items()


class _TextRM:
    """A token RM over texts: each character's reward is given; best-of-n reads `score_texts`/`encode_response`."""

    level = "token"

    def __init__(self, rewards: dict[str, list[float]]):
        self.rewards = rewards

    def encode_response(self, text):
        return list(text)

    def score_texts(self, prompts, responses):
        T = max(len(r) for r in responses)
        token = torch.zeros(len(responses), T)
        for i, r in enumerate(responses):
            token[i, : len(r)] = torch.tensor(self.rewards[r])
        return SimpleNamespace(token_rewards=token, sequence_score=token.sum(1))


def test_best_of_n_ranks_by_the_reward_ppo_optimises():
    """An even number of response tokens: numpy's median (the mean of the two middle values) and PPO's (the lower
    one) differ, and best-of-n must use PPO's."""
    from fgalign.eval.best_of_n import ranking_scores

    rewards = {"ab": [0.0, -1.0], "cde": [-0.4, 0.0, 0.0], "f": [-3.0]}  # 6 tokens, middle values −0.4 and 0.0
    scores = ranking_scores(_TextRM(rewards), ["p"], [["ab", "cde", "f"]])["token sum"]
    token = torch.tensor([[0.0, -1.0, 0.0], [-0.4, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    ppo = rm_rewards(RewardSettings(reward="token", reward_scale="raw"), token, token, token.sum(1), mask,
                     mask.sum(1) - 1).sum(1)
    np.testing.assert_allclose(scores[0], ppo.numpy(), atol=1e-6)
    np.testing.assert_allclose(ppo.numpy(), [-0.2, 0.8, -2.6], atol=1e-6)  # centred on −0.4
    with_numpys_median = [-1.0 + 2 * 0.2, -0.4 + 3 * 0.2, -3.0 + 0.2]  # centred on −0.2: what best-of-n did
    assert not np.allclose(scores[0], with_numpys_median, atol=1e-3)

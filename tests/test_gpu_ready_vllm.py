"""Issue 23, the vLLM rollout path without vLLM or a GPU: the trainer's handling of its engine (built before
`load_state`, given the policy's dtype and a bounded context, closed however the run ends) with a stand-in
engine, and `VllmSampler`'s own settings and shutdown with a stand-in `vllm` module."""
import sys
import types

import pytest
import torch
from ppo_fakes import FakeTask, TableRewardModel

import fgalign.rl.trainer as trainer
from fgalign.data.tokenize import encode_prompt
from fgalign.models.policy import load_causal_lm, load_tokenizer
from fgalign.sampling.hf import generate
from fgalign.sampling.vllm import VllmSampler

EVENTS: list = []


class FakeEngine:
    """Stands in for `VllmSampler`: samples with `generate` from the weights it was last given, and seeds the
    process's RNG when it starts, as vLLM's worker does (the cause of defect 6)."""

    def __init__(self, model_dir, seed=0, dtype="auto", max_model_len=None):
        torch.manual_seed(seed)
        self.settings = {"dtype": dtype, "max_model_len": max_model_len}
        self.model = load_causal_lm(model_dir).eval()
        EVENTS.append(("engine", self.settings))

    def load_weights(self, policy):
        self.model.load_state_dict(policy.state_dict())

    def generate(self, prompts, eos_id, pad_id, settings):
        return generate(self.model, prompts, eos_id, pad_id, settings)

    def close(self):
        EVENTS.append(("close", None))


@pytest.fixture()
def fake_engine(monkeypatch):
    from accelerate import Accelerator

    EVENTS.clear()
    real_load_state = Accelerator.load_state
    monkeypatch.setattr(trainer, "vllm_problem", lambda: None)
    monkeypatch.setattr(trainer, "VllmSampler", FakeEngine)
    monkeypatch.setattr(Accelerator, "load_state", lambda self, *a, **kw: EVENTS.append(("load_state", None))
                        or real_load_state(self, *a, **kw))
    yield EVENTS


def _cfg(policy_dir, out, **kw):
    small = dict(batch_size=8, max_new_tokens=6, minibatches=2, ppo_epochs=1, num_prompts=16, micro_batch=8,
                 rollout="vllm", device="cpu", save_steps=1)
    return trainer.PPOConfig(policy=str(policy_dir), rm="unused", out=str(out), **{**small, **kw})


def _train(cfg, rm=None):
    return trainer.train_ppo(cfg, reward_model=rm or TableRewardModel(300), task=FakeTask())


def test_resumed_vllm_run_equals_the_uninterrupted_one(tiny_policy_dir, tmp_path, fake_engine):
    whole = _train(_cfg(tiny_policy_dir, tmp_path / "whole", iterations=2))["history"]
    _train(_cfg(tiny_policy_dir, tmp_path / "cut", iterations=1))
    fake_engine.clear()
    resumed = _train(_cfg(tiny_policy_dir, tmp_path / "cut", iterations=2, resume=True))["history"]
    assert resumed[-1]["iteration"] == 2
    for key in ("rm_score", "kl_k1", "policy_loss", "response_length"):
        assert resumed[-1][key] == whole[-1][key], key
    assert [e for e, _ in fake_engine] == ["engine", "load_state", "close"]  # built first, closed at the end


def test_engine_gets_the_policys_dtype_and_a_bounded_context(tiny_policy_dir, tmp_path, fake_engine):
    _train(_cfg(tiny_policy_dir, tmp_path / "run", iterations=1, save_steps=0))
    tok = load_tokenizer(tiny_policy_dir)
    longest = max(len(encode_prompt(tok, p)) for p in FakeTask().prompts("train", 16, 0))
    assert fake_engine[0] == ("engine", {"dtype": torch.float32, "max_model_len": longest + 6})


def test_engine_is_closed_when_the_run_fails(tiny_policy_dir, tmp_path, fake_engine):
    class BrokenRM(TableRewardModel):
        def score_responses(self, *a, **kw):
            raise RuntimeError("RM failed")

    with pytest.raises(RuntimeError, match="RM failed"):
        _train(_cfg(tiny_policy_dir, tmp_path / "run", iterations=2), rm=BrokenRM(300))
    assert fake_engine[-1] == ("close", None)


def test_vllm_sampler_settings_and_shutdown(monkeypatch):
    built, shut = [], []

    class LLM:  # vLLM's engine as far as VllmSampler uses it; no `shutdown` method (older vLLM)
        def __init__(self, **kwargs):
            built.append(kwargs)
            self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=lambda: shut.append(1)))

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM))
    sampler = VllmSampler("some/dir", seed=3, dtype=torch.bfloat16, max_model_len=40)
    assert built[0]["dtype"] == "bfloat16" and built[0]["max_model_len"] == 40 and built[0]["seed"] == 3
    sampler.close()
    sampler.close()  # twice: the second does nothing
    assert shut == [1] and sampler.llm is None

"""Defects found in a review of the PPO code (issue 10), each pinned by a test that failed before its fix."""
import pytest
import torch
from ppo_fakes import FakeTask, TableRewardModel

from fgalign.errors import InputError
from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm
from fgalign.models.value import ValueModel
from fgalign.rl.kl import PIKLController
from fgalign.sampling.hf import generate
from fgalign.sampling.rollout import SamplingConfig
from fgalign.rl.trainer import PPOConfig, train_ppo
from fgalign.rl.update import PPORewardSettings, make_experience


def test_rollouts_are_scored_with_dropout_off(tiny_tokenizer):
    """A policy identical to its reference has KL 0 even when the update left it in train mode with dropout."""
    torch.manual_seed(0)
    cfg = TinyModelConfig(n_layer=1, d_model=32, n_head=2, max_len=64, dropout=0.1)
    policy = build_tiny_causal_lm(cfg, tiny_tokenizer)
    ref = build_tiny_causal_lm(cfg, tiny_tokenizer)
    ref.load_state_dict(policy.state_dict())
    value = ValueModel(build_tiny_causal_lm(cfg, tiny_tokenizer).transformer)
    policy.train(), ref.train(), value.train()  # as `ppo_update` leaves them
    prompts = [tiny_tokenizer(p, add_special_tokens=False)["input_ids"] for p in FakeTask().prompts("train", 8, 0)]
    rollout = generate(policy, prompts, tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id,
                       SamplingConfig(max_new_tokens=8))
    rm_out = TableRewardModel(len(tiny_tokenizer)).score_responses(rollout.prompt_lists(), rollout.response_lists())
    kw = dict(beta=0.1, rs=PPORewardSettings(reward="token"), gamma=1.0, lam=0.95, whiten_advantages=True,
              temperature=1.0, micro_batch=8)
    exp = make_experience(rollout, rm_out, policy, ref, value, **kw)
    assert torch.count_nonzero(exp.kl) == 0
    values_again = make_experience(rollout, rm_out, policy, ref, value, **kw).values
    assert torch.equal(exp.values, values_again)  # no dropout noise in V_old either
    assert policy.training and value.training  # each model's mode is restored


def test_value_init_from_an_encoder_or_another_tokenizer_is_refused(tiny_policy_dir, tiny_tokenizer, tmp_path):
    from transformers import BertConfig, BertModel

    from fgalign.tasks.tokenizer import train_bpe_tokenizer

    encoder = tmp_path / "encoder"
    BertModel(BertConfig(vocab_size=len(tiny_tokenizer) + 100, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(encoder)
    tiny_tokenizer.save_pretrained(encoder)
    with pytest.raises(InputError, match="bidirectional encoder"):
        ValueModel.from_backbone_dir(encoder, len(tiny_tokenizer), tokenizer=tiny_tokenizer)

    other = tmp_path / "other"  # a causal backbone, big enough, but its ids mean other tokens
    other_tok_dir = train_bpe_tokenizer(["zebra quilt xylophone"] * 20, tmp_path / "tok", vocab_size=300)
    from fgalign.models.policy import load_tokenizer

    other_tok = load_tokenizer(other_tok_dir)
    build_tiny_causal_lm(TinyModelConfig(n_layer=1, d_model=32, n_head=2, max_len=64), other_tok).save_pretrained(other)
    other_tok.save_pretrained(other)
    with pytest.raises(InputError, match="tokenizer differs"):
        ValueModel.from_backbone_dir(other, len(tiny_tokenizer), tokenizer=tiny_tokenizer)

    assert isinstance(ValueModel.from_backbone_dir(tiny_policy_dir, len(tiny_tokenizer), tokenizer=tiny_tokenizer),
                      ValueModel)


def test_controller_is_fed_the_estimator_in_the_reward_and_adamw_has_no_decay(tiny_policy_dir, tmp_path):
    cfg = PPOConfig(policy=str(tiny_policy_dir), rm="unused", out=str(tmp_path / "ppo"), iterations=4, batch_size=8,
                    max_new_tokens=8, minibatches=2, ppo_epochs=1, num_prompts=16, micro_batch=8, kl_estimator="k3",
                    kl_target=1.0, lr=1e-2, save_steps=0)
    result = train_ppo(cfg, reward_model=TableRewardModel(300), task=FakeTask())
    history = result["history"]

    def replay(estimator):
        ctl = PIKLController(cfg.kl_coef, cfg.kl_target)
        for h in history[:3]:
            ctl.update(h[f"kl_{estimator}"], cfg.batch_size)
        return ctl.beta

    assert history[1]["kl_k3"] != history[1]["kl_k1"]
    assert history[3]["beta"] == pytest.approx(replay("k3"))
    assert replay("k1") != pytest.approx(replay("k3"))
    assert PPOConfig.__dataclass_fields__["weight_decay"].default == 0.0

"""bf16 only where it is native (models/precision.py), and RM scoring under bf16 autocast stays near fp32."""
import pytest
import torch

from fgalign.errors import InputError
from fgalign.models import precision


def test_cpu_flags_decide_native_bf16(tmp_path):
    with_flag, without = tmp_path / "with", tmp_path / "without"
    with_flag.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16 avx512vl\n")
    without.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    precision.cpu_has_native_bf16.cache_clear()
    try:
        assert precision.cpu_has_native_bf16(str(with_flag)) is True
        assert precision.cpu_has_native_bf16(str(without)) is False
        assert precision.cpu_has_native_bf16(str(tmp_path / "missing")) is False
    finally:
        precision.cpu_has_native_bf16.cache_clear()


def test_bf16_is_refused_where_it_would_be_emulated(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(InputError, match="no native bf16") as info:
        precision.check_bf16(True, "cpu", "--rm-bf16")
    assert info.value.field == "--rm-bf16"
    precision.check_bf16(False, "cpu")  # fp32 is always fine
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    precision.check_bf16(True, "cpu")


def test_train_rm_refuses_emulated_bf16_before_reading_data(monkeypatch, tmp_path):
    from fgalign.train import reward

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    cfg = reward.RewardConfig(data=str(tmp_path / "missing.jsonl"), out=str(tmp_path / "rm"), model="m", bf16=True,
                              device="cpu")
    with pytest.raises(InputError, match="no native bf16"):
        reward.run(cfg)
    assert not (tmp_path / "rm").exists()


def test_rm_scores_under_bf16_autocast_close_to_fp32(tiny_policy_dir):
    """The same weights scored both ways: rewards differ by bf16 rounding only, and come back as fp32."""
    from fgalign.models.reward import build_reward_model, head_module

    rm = build_reward_model(tiny_policy_dir, "token", "mistake-bce")
    torch.manual_seed(0)
    torch.nn.init.normal_(head_module(rm.model).weight, std=0.5)
    prompts, responses = ["List 3 fruits:"] * 2, [" apple, banana, cherry.", " red, blue."]
    fp32 = rm.score_texts(prompts, responses)
    rm.bf16 = True
    bf16 = rm.score_texts(prompts, responses)
    assert bf16.token_rewards.dtype == torch.float32
    assert not torch.equal(fp32.token_rewards, bf16.token_rewards)  # autocast really ran in bf16
    scale = fp32.token_rewards.abs().max()
    assert (fp32.token_rewards - bf16.token_rewards).abs().max() < 0.05 * scale

"""Issue 23: what a first CUDA / bf16 / fp16 run would break, reproduced on the CPU where it can be.

Each test names its defect. Where a fault needs a second device (a reference on the CPU while the policy is on
CUDA, the CUDA random stream), a spy checks where things are put and which streams are saved; where it needs
only a dtype or accelerate's GradScaler, the real thing runs on the CPU.
"""
import copy
from pathlib import Path

import pytest
import torch
from ppo_fakes import FakeTask, TableRewardModel

from fgalign.models.policy import load_causal_lm, load_tokenizer
from fgalign.models.value import ValueModel
from fgalign.rl.update import PPORewardSettings, UpdateSettings, make_experience, ppo_update
from fgalign.sampling.hf import generate
from fgalign.sampling.rollout import Rollout, SamplingConfig


@pytest.fixture(scope="module")
def bf16_policy_dir(tiny_policy_dir, tmp_path_factory):
    """The tiny policy saved in bf16 (as chat models ship): transformers >= 5 loads it back in bf16."""
    out = tmp_path_factory.mktemp("bf16_policy")
    model = load_causal_lm(tiny_policy_dir).to(torch.bfloat16)
    model.save_pretrained(out)
    load_tokenizer(tiny_policy_dir).save_pretrained(out)
    return out


@pytest.fixture()
def fresh_accelerate_state():
    """accelerate keeps its state per process: each Accelerator here gets its own mixed precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _experience(policy_dir, n=8):
    tok = load_tokenizer(policy_dir)
    torch.manual_seed(0)
    policy, ref = load_causal_lm(policy_dir), load_causal_lm(policy_dir).eval()
    value = ValueModel.from_backbone_dir(policy_dir, len(tok))
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in FakeTask().prompts("train", n, 0)]
    rollout = generate(policy, prompts, tok.eos_token_id, tok.pad_token_id, SamplingConfig(max_new_tokens=8))
    scores = TableRewardModel(len(tok)).score_responses(rollout.prompt_lists(), rollout.response_lists(), tok)
    exp = make_experience(rollout, scores, policy, ref, value, 0.1, PPORewardSettings(reward="sequence"), gamma=1.0,
                          lam=0.95, whiten_advantages=True, temperature=1.0, micro_batch=4)
    return policy, ref, value, rollout, scores, exp


# -- defect 2: a bf16-saved checkpoint ---------------------------------------------------------------------
def test_bf16_saved_checkpoint_loads_in_fp32_and_the_value_model_runs(bf16_policy_dir):
    from transformers import AutoModelForCausalLM

    from fgalign.models.reward import build_reward_model

    assert AutoModelForCausalLM.from_pretrained(bf16_policy_dir).dtype == torch.bfloat16  # the fault's cause
    vocab = len(load_tokenizer(bf16_policy_dir))
    value = ValueModel.from_backbone_dir(bf16_policy_dir, vocab)  # raised "mat1 and mat2 ... BFloat16 and Float"
    ids = torch.randint(0, vocab, (2, 6))
    v = value(ids, torch.ones_like(ids), torch.arange(6).expand(2, 6))
    assert v.shape == (2, 6) and v.dtype == torch.float32
    # Everything that is trained loads with fp32 master weights (mixed precision then autocasts them).
    rm = build_reward_model(bf16_policy_dir, "token", "mistake-bce")
    for model in (load_causal_lm(bf16_policy_dir), value, rm.model):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert load_causal_lm(bf16_policy_dir, dtype="auto").dtype == torch.bfloat16  # inference may keep it


def test_value_head_gets_fp32_input_from_a_half_precision_backbone(tiny_policy_dir):
    vocab = len(load_tokenizer(tiny_policy_dir))
    value = ValueModel.from_backbone_dir(tiny_policy_dir, vocab)
    value.backbone.to(torch.bfloat16)  # e.g. a caller that keeps the backbone in bf16 to save memory
    ids = torch.randint(0, vocab, (2, 5))
    assert value(ids, torch.ones_like(ids), torch.arange(5).expand(2, 5)).dtype == torch.float32


def test_ppo_runs_on_a_bf16_saved_policy(bf16_policy_dir, tmp_path):
    from fgalign.rl.trainer import PPOConfig, train_ppo

    cfg = PPOConfig(policy=str(bf16_policy_dir), rm="unused", out=str(tmp_path / "run"), iterations=1,
                    batch_size=8, max_new_tokens=6, minibatches=2, ppo_epochs=1, num_prompts=16, micro_batch=8)
    result = train_ppo(cfg, reward_model=TableRewardModel(300), task=FakeTask())
    assert result["final"]["kl_k1"] == 0.0 and torch.isfinite(torch.tensor(result["final"]["value_loss"]))


# -- defect 3: fp16's GradScaler with two optimizers -----------------------------------------------------------
def _update_with(accelerator, policy, value, exp):
    policy, value = copy.deepcopy(policy), copy.deepcopy(value)
    opts = (torch.optim.AdamW(policy.parameters(), lr=1e-3), torch.optim.AdamW(value.parameters(), lr=1e-3))
    if accelerator is not None:
        policy, value, *opts = accelerator.prepare(policy, value, *opts)
        accelerator.native_amp = True  # after prepare: the forwards stay fp32, only the loss scaling differs
    torch.manual_seed(5)
    ppo_update(exp, policy, value, opts, UpdateSettings(ppo_epochs=1, minibatches=2, max_grad_norm=0.05),
               accelerator=accelerator)
    return policy.state_dict(), value.state_dict()


def test_fp16_loss_scaling_with_two_optimizers_equals_the_unscaled_update(tiny_policy_dir, fresh_accelerate_state):
    """accelerate makes no GradScaler on the CPU, so the one it makes on CUDA is put in by hand. Before the fix
    the second `clip_grad_norm_` raised "unscale_() has already been called"; a power-of-two scale is exact in
    fp32, so the scaled update must give the unscaled one's parameters (value model included: accelerate's
    per-optimizer `scaler.update()` would have unscaled its gradients twice)."""
    from accelerate import Accelerator

    policy, _, value, _, _, exp = _experience(tiny_policy_dir)
    plain_policy, plain_value = _update_with(None, policy, value, exp)
    accelerator = Accelerator(cpu=True, mixed_precision="fp16")
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled_policy, scaled_value = _update_with(accelerator, policy, value, exp)
    assert accelerator.scaler.get_scale() == 2.0**12  # one update() per step, no inf found
    for plain, scaled in ((plain_policy, scaled_policy), (plain_value, scaled_value)):
        for k in plain:
            torch.testing.assert_close(scaled[k], plain[k], rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(plain_value[k], value.state_dict()[k]) for k in plain_value)  # it did move


# -- defect 8: the reference under the policy's autocast --------------------------------------------------------
def test_kl_at_identical_weights_is_zero_under_bf16_mixed_precision(tiny_policy_dir, fresh_accelerate_state):
    """accelerate's bf16 autocasts the prepared policy's forward (on the CPU too); the reference is not prepared.
    Run both inside `accelerator.autocast()` and identical weights give identical log-probs."""
    from accelerate import Accelerator

    _, ref, value, rollout, scores, _ = _experience(tiny_policy_dir)
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    policy = accelerator.prepare(load_causal_lm(tiny_policy_dir))
    raw = accelerator.unwrap_model(policy)  # the trainer's raw_policy: its forward still autocasts
    kw = dict(beta=0.1, rs=PPORewardSettings(reward="sequence"), gamma=1.0, lam=0.95, whiten_advantages=True,
              temperature=1.0, micro_batch=4)
    without = make_experience(rollout, scores, raw, ref, value, **kw)
    assert without.kl.abs().max() > 1e-4  # the fault: bf16 policy against an fp32 reference
    with_autocast = make_experience(rollout, scores, raw, ref, value, autocast=accelerator.autocast, **kw)
    assert torch.equal(with_autocast.logprobs, with_autocast.ref_logprobs)
    assert with_autocast.kl.abs().max() == 0


def test_ppo_under_bf16_from_the_environment_starts_at_zero_kl_and_evaluates_under_autocast(
        tiny_policy_dir, tmp_path, monkeypatch, fresh_accelerate_state):
    """The route benchmarks/gpu_check.sh takes: ACCELERATE_MIXED_PRECISION=bf16 (bf16 autocast runs on the CPU too).
    Iteration 1 samples from the reference's own weights, so its KL must be exactly 0; the evaluation runs under
    the same autocast, so its KL to the reference compares like with like."""
    from fgalign.rl.trainer import PPOConfig, train_ppo

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    seen = []

    def eval_fn(model, iteration):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return {}

    cfg = PPOConfig(policy=str(tiny_policy_dir), rm="unused", out=str(tmp_path / "run"), iterations=1, batch_size=8,
                    max_new_tokens=6, minibatches=2, ppo_epochs=1, num_prompts=16, micro_batch=8, device="cpu")
    result = train_ppo(cfg, eval_fn=eval_fn, reward_model=TableRewardModel(300), task=FakeTask())
    assert result["history"][0]["kl_k1"] == 0.0 and seen == [True]


# -- defect 11: bf16 logits, host syncs, TF32 -------------------------------------------------------------------
class _Logits(torch.nn.Module):
    """A model whose logits are fixed bf16 values (what a bf16 policy returns)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep):
        return type("Out", (), {"logits": self.logits[:, -logits_to_keep:]})()


def test_bf16_logits_are_divided_by_the_temperature_in_fp32():
    from fgalign.rl.scoring import policy_logprobs

    torch.manual_seed(0)
    B, P, T, V = 2, 3, 4, 50
    logits = (torch.randn(B, P + T, V) * 3).to(torch.bfloat16)
    rollout = Rollout(torch.ones(B, P, dtype=torch.long), torch.ones(B, P, dtype=torch.bool),
                      torch.randint(0, V, (B, T)), torch.ones(B, T, dtype=torch.bool), torch.full((B,), T - 1),
                      torch.zeros(B, dtype=torch.bool))
    got, _ = policy_logprobs(_Logits(logits), rollout, temperature=0.7)
    exact = torch.log_softmax(logits[:, P - 1:-1].float() / 0.7, -1).gather(-1, rollout.response_ids[..., None])
    rounded = torch.log_softmax((logits[:, P - 1:-1] / 0.7).float(), -1).gather(-1, rollout.response_ids[..., None])
    assert torch.equal(got, exact.squeeze(-1)) and not torch.equal(got, rounded.squeeze(-1))


def test_rollout_lists_copy_each_tensor_to_the_host_once(monkeypatch):
    """On CUDA every `.tolist()`/`int()` of a row waits for the GPU: the lists are cut on the host instead."""
    B = 16
    rollout = Rollout(torch.arange(B * 3).view(B, 3), torch.rand(B, 3) > 0.3, torch.arange(B * 5).view(B, 5),
                      torch.ones(B, 5, dtype=torch.bool), torch.randint(0, 5, (B,)), torch.zeros(B, dtype=torch.bool))
    expected_prompts = [row[m].tolist() for row, m in zip(rollout.prompt_ids, rollout.prompt_mask)]
    expected_responses = [row[: int(n) + 1].tolist() for row, n in zip(rollout.response_ids, rollout.last_index)]
    calls = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append(self.shape) or original(self))
    assert rollout.prompt_lists() == expected_prompts and rollout.response_lists() == expected_responses
    assert len(calls) == 4  # ids and mask, ids and last index: not one per row


def test_tf32_is_enabled_for_cuda_only(monkeypatch):
    from fgalign.runinfo import use_tf32

    matmul, conv = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert not use_tf32()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setenv("FGALIGN_TF32", "0")
        assert not use_tf32()
        monkeypatch.setenv("FGALIGN_TF32", "1")
        assert use_tf32()
        assert torch.backends.cuda.matmul.fp32_precision == "tf32" == torch.backends.cudnn.conv.fp32_precision
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = matmul, conv


# -- defect 4: the accelerator's random stream -----------------------------------------------------------------
def test_preserved_rng_saves_the_accelerators_stream(monkeypatch):
    import fgalign.runinfo as runinfo

    calls = []
    monkeypatch.setattr(torch.random, "fork_rng", lambda **kw: calls.append(kw) or "ctx")
    runinfo.preserved_rng(torch.device("cuda", 1))
    runinfo.preserved_rng("cpu")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    runinfo.preserved_rng(torch.device("cuda"))
    assert calls == [{"devices": [1], "device_type": "cuda"}, {"devices": []},
                     {"devices": [3], "device_type": "cuda"}]


def test_trainer_protects_the_stream_of_its_device_and_evaluation_does_not_shift_it(tiny_policy_dir, tmp_path,
                                                                                     monkeypatch):
    import fgalign.rl.trainer as trainer
    from fgalign.runinfo import preserved_rng

    devices = []
    monkeypatch.setattr(trainer, "preserved_rng", lambda d: devices.append(torch.device(d)) or preserved_rng(d))

    def run(name, eval_fn):
        cfg = trainer.PPOConfig(policy=str(tiny_policy_dir), rm="unused", out=str(tmp_path / name), iterations=2,
                                batch_size=8, max_new_tokens=6, minibatches=2, ppo_epochs=1, num_prompts=16, micro_batch=8,
                                eval_every=1, device="cpu", save_steps=0)
        return trainer.train_ppo(cfg, eval_fn=eval_fn, reward_model=TableRewardModel(300), task=FakeTask())

    def reseeding_eval(model, iteration):  # what the win-rate evaluator does (torch.manual_seed: every device)
        torch.manual_seed(1234)
        return {}

    with_eval, without = run("eval", reseeding_eval), run("plain", None)
    assert devices == [torch.device("cpu")] * 2
    assert [h["rm_score"] for h in with_eval["history"]] == [h["rm_score"] for h in without["history"]]


# -- defect 1: the pipeline's SFT reference on the policy's device ---------------------------------------------
def test_pipeline_evaluators_load_the_reference_where_ppo_puts_the_policy(tiny_policy_dir, tmp_path, monkeypatch):
    """The fault: `load_causal_lm(run / "sft")` put the reference on the CPU; on CUDA, `kl_to_reference` then ran it
    on the policy's CUDA rollout. A spy records the device each model is asked for (no CUDA here)."""
    import shutil

    import fgalign.pipeline.runner as pipeline

    shutil.copytree(tiny_policy_dir, tmp_path / "sft")
    asked = []
    real = pipeline.load_causal_lm
    monkeypatch.setattr(pipeline, "resolve_device", lambda name: torch.device("cuda") if name == "auto" else name)
    monkeypatch.setattr(pipeline, "load_causal_lm", lambda path, device="cpu", **kw:
                        asked.append((Path(path).name, torch.device(device))) or real(path, **kw))
    monkeypatch.setattr(pipeline, "build_evaluator", lambda task, judge, ref, *a, **kw: ref)
    cfgs = {"task": "default", "ppo": {}, "eval": {"judge": "task", "n_valid": 2, "n_test": 2}}
    pipeline.make_evaluators(cfgs, tmp_path)
    assert asked == [("sft", torch.device("cuda"))]
    assert pipeline.ppo_device({"ppo": {"device": "cpu"}}) == "cpu"


def test_kl_to_reference_moves_the_reference_to_the_policys_device(tiny_policy_dir):
    from fgalign.eval.winrate import kl_to_reference

    policy, ref, _, rollout, _, _ = _experience(tiny_policy_dir)
    moved = []
    ref.to = lambda device: moved.append(torch.device(device)) or ref  # spy on the one call that places it
    result = kl_to_reference(policy, ref, rollout)
    assert moved == [torch.device("cpu")] and result["kl_k1"] == pytest.approx(0.0, abs=1e-6)


# -- defect 10: a LoRA RM after ZeRO-3 / FSDP -----------------------------------------------------------------
def test_lora_rm_is_merged_from_the_gathered_weights_not_from_the_shards(tiny_policy_dir):
    """Under ZeRO-3 a rank's parameters are empty placeholders; the full weights come from the gather, keyed
    by the adapter-wrapped model. The merge must use those (it merged the shards, then saved mismatched keys)."""
    from fgalign.models.reward import build_reward_model
    from fgalign.train.reward import RewardConfig, apply_lora
    from fgalign.train.sharding import merged_lora_model

    rm = build_reward_model(tiny_policy_dir, "token", "mistake-bce")
    apply_lora(rm, RewardConfig(data="unused", out="unused", model=str(tiny_policy_dir), lora=True))
    torch.manual_seed(0)
    with torch.no_grad():  # "trained": adapters and head away from their initial values
        for name, p in rm.model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.normal_()
    gathered = {k: v.clone() for k, v in rm.model.state_dict().items()}  # what full_state_dict returns
    expected = copy.deepcopy(rm.model).merge_and_unload().state_dict()
    for p in rm.model.parameters():
        p.data = torch.empty(0)  # the shards this rank holds
    merged = merged_lora_model(rm.model, gathered).state_dict()
    assert merged.keys() == expected.keys() and not any("lora" in k for k in merged)
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    head = [k for k in expected if k.startswith(("score.", "classifier."))]
    assert head and all(merged[k].abs().sum() > 0 for k in head)  # the trained head, not a fresh one

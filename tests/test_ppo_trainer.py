"""The PPO trainer end to end on a tiny policy: reward-path equivalence, outputs, evaluation, resume after
SIGKILL, NaN stop, LoRA, the real reward model through the CLI, and two processes under accelerate."""
import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ppo_fakes import FakeTask, TableRewardModel, eos_prone_policy_dir
from safetensors.torch import load_file

from fgalign.models.policy import load_causal_lm, load_tokenizer
from fgalign.errors import InputError
from fgalign.models.value import ValueModel
from fgalign.rl.trainer import PPOConfig, prompt_indices, train_ppo
from fgalign.sampling.hf import embedded_pad_id
from fgalign.rl.update import PPORewardSettings, TrainingDiverged, UpdateSettings, make_experience, ppo_update
from fgalign.sampling.hf import generate
from fgalign.sampling.rollout import SamplingConfig

TESTS = Path(__file__).parent
SMALL = dict(batch_size=8, max_new_tokens=8, minibatches=2, ppo_epochs=2, num_prompts=32, micro_batch=8, eval_every=1)


@pytest.fixture(scope="module")
def policy_dir(tiny_policy_dir, tmp_path_factory):
    return eos_prone_policy_dir(tiny_policy_dir, tmp_path_factory.mktemp("eos_prone"))


def _cfg(policy_dir, out, **kw):
    return PPOConfig(policy=str(policy_dir), rm="unused", out=str(out), **{**SMALL, **kw})


def test_dense_eos_only_reward_equals_sequence_path_exactly(policy_dir):
    """Same rollout, same seed: `token` on an EOS-only reward tensor and `sequence` give identical rewards,
    advantages, losses and parameters after the update."""
    tok = load_tokenizer(policy_dir)
    torch.manual_seed(0)
    base = load_causal_lm(policy_dir)
    ref = load_causal_lm(policy_dir).eval()
    value0 = ValueModel.from_backbone_dir(policy_dir, len(tok))
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in FakeTask().prompts("train", 8, 0)]
    rollout = generate(base, prompts, tok.eos_token_id, tok.pad_token_id, SamplingConfig(max_new_tokens=8))
    args = (rollout.prompt_lists(), rollout.response_lists(), tok)
    eos_only = TableRewardModel(len(tok), eos_only=True).score_responses(*args)
    dense = TableRewardModel(len(tok)).score_responses(*args)
    assert torch.count_nonzero(eos_only.token_rewards) == len(rollout) and torch.count_nonzero(dense.token_rewards) > len(rollout)
    results = []
    for mode, rm_out in (("token", eos_only), ("sequence", dense)):
        policy, value = copy.deepcopy(base), copy.deepcopy(value0)
        opts = (torch.optim.AdamW(policy.parameters(), lr=1e-3), torch.optim.AdamW(value.parameters(), lr=1e-3))
        rs = PPORewardSettings(reward=mode, reward_scale="total-std")
        exp = make_experience(rollout, rm_out, policy, ref, value, 0.1, rs, gamma=1.0, lam=0.95,
                              whiten_advantages=True, temperature=1.0, micro_batch=4)
        torch.manual_seed(123)
        stats = ppo_update(exp, policy, value, opts, UpdateSettings(ppo_epochs=2, minibatches=2))
        results.append((exp, stats, policy.state_dict(), value.state_dict()))
    (a, sa, pa, va), (b, sb, pb, vb) = results
    for name in ("rm_rewards", "kl", "rewards", "advantages", "returns"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert sa == sb and sa["policy_loss"] != 0
    assert all(torch.equal(pa[k], pb[k]) for k in pa) and all(torch.equal(va[k], vb[k]) for k in va)
    assert not torch.equal(pa["transformer.h.0.attn.c_attn.weight"], base.state_dict()["transformer.h.0.attn.c_attn.weight"])


def test_train_outputs_log_eval_and_plain_transformers_policy(policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    calls = []

    def eval_fn(model, iteration):
        calls.append(iteration)
        torch.manual_seed(999)  # must not leak into training's RNG stream
        return {"win_rate": 0.5 + iteration / 100}

    out = tmp_path / "run"
    result = train_ppo(_cfg(policy_dir, out, iterations=3, eval_every=2, keep_eval_checkpoints=True,
                            reward="token-shaped", missing_eos_penalty=1.0),
                       eval_fn=eval_fn, reward_model=TableRewardModel(300), task=FakeTask())
    assert calls == [2, 3]
    log = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3] and log[1]["eval_win_rate"] == pytest.approx(0.52)
    needed = {"rm_score", "kl_k1", "kl_k3", "entropy", "approx_kl", "clipfrac", "value_loss", "explained_variance",
              "response_length", "truncation_rate", "time_generate", "time_score", "time_train", "beta", "task_score"}
    assert needed <= set(log[0]) and all(isinstance(log[-1][k], float) for k in needed)
    assert log[0]["kl_k1"] == 0.0  # the first rollout comes from the reference itself
    assert 0 < log[0]["truncation_rate"] < 1 and log[0]["response_length"] <= 8
    assert result["evals"][-1]["iteration"] == 3 and list((out / "tensorboard").iterdir())
    for d in (out, out / "eval_checkpoints" / "iter_000002"):
        model = AutoModelForCausalLM.from_pretrained(d)
        assert (d / "fgalign_config.json").exists() and (d / "tokenizer.json").exists()
    saved = json.loads((out / "fgalign_config.json").read_text())
    assert saved["config"]["reward"] == "token-shaped" and saved["stage"] == "ppo"
    initial = load_causal_lm(policy_dir).state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in model.state_dict().items())


RESUME_SCRIPT = """
import sys, time
from ppo_fakes import FakeTask, TableRewardModel
from fgalign.rl.trainer import PPOConfig, train_ppo
cfg = PPOConfig(**{cfg!r})
def stall(model, iteration):
    if iteration == 2:
        print("STALLING", flush=True)
        time.sleep(600)
    return {{}}
train_ppo(cfg, eval_fn=stall, reward_model=TableRewardModel(300), task=FakeTask())
"""


def _env():
    return {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_resume_after_sigkill_reaches_the_uninterrupted_state(policy_dir, tmp_path):
    # Same thread count in every process: float reductions, hence bits, depend on it.
    kw = dict(iterations=3, save_steps=1, reward="token", kl_target=0.5, kl_horizon=16, ppo_epochs=1,
              threads=torch.get_num_threads())
    reference = train_ppo(_cfg(policy_dir, tmp_path / "ref", **kw), reward_model=TableRewardModel(300), task=FakeTask())

    out = tmp_path / "killed"
    cfg = vars(_cfg(policy_dir, out, **kw))
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(cfg=cfg))
    proc = subprocess.Popen([sys.executable, str(script)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # iteration 2 has updated the weights in memory when it stalls
            if "STALLING" in line:
                break
        assert (out / "checkpoints" / "iter_000001").exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL and not (out / "model.safetensors").exists()

    resumed = train_ppo(_cfg(policy_dir, out, resume=True, **kw), reward_model=TableRewardModel(300), task=FakeTask())
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    va = load_file(tmp_path / "ref" / "checkpoints" / "iter_000003" / "model_1.safetensors")
    vb = load_file(out / "checkpoints" / "iter_000003" / "model_1.safetensors")
    assert all(torch.equal(va[k], vb[k]) for k in va)
    drop = ("time_generate", "time_score", "time_train")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(resumed["history"]) == strip(reference["history"][1:])
    log = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3]
    assert reference["history"][-1]["beta"] != 0.1  # the adaptive controller moved, and was restored


class NaNOnCall(TableRewardModel):
    def __init__(self, vocab_size, bad_call):
        super().__init__(vocab_size)
        self.bad_call = bad_call

    def score_responses(self, prompt_ids, response_ids, tokenizer=None, prompts=None):
        out = super().score_responses(prompt_ids, response_ids, tokenizer)
        if self.calls == self.bad_call:
            out.token_rewards[0, 0] = float("nan")
        return out


def test_nan_reward_stops_the_run_naming_iteration_and_quantity(policy_dir, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"iteration 2: 1 non-finite value\(s\) in rewards.*iter_000001"):
        train_ppo(_cfg(policy_dir, out, iterations=3, save_steps=1, reward_scale="raw"),
                  reward_model=NaNOnCall(300, bad_call=2), task=FakeTask())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_000001"]
    assert not (out / "model.safetensors").exists()


def test_lora_reference_is_the_adapter_disabled_policy(policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    result = train_ppo(_cfg(policy_dir, out, iterations=2, lora=True, lr=1e-2, save_steps=0),
                       reward_model=TableRewardModel(300), task=FakeTask())
    first, second = result["history"]
    assert first["kl_k1"] == 0.0 and second["kl_k3"] > 0  # the adapter moved π away from the disabled one
    merged = AutoModelForCausalLM.from_pretrained(out).state_dict()  # plain transformers, adapter merged
    initial = load_causal_lm(policy_dir).state_dict()
    assert not any("lora" in k for k in merged)
    assert not torch.equal(merged["transformer.h.0.attn.c_attn.weight"], initial["transformer.h.0.attn.c_attn.weight"])
    assert torch.equal(merged["transformer.wte.weight"], initial["transformer.wte.weight"])  # not adapted


def test_cli_with_the_real_reward_model(policy_dir, tmp_path):
    from fgalign.cli import main
    from fgalign.models.reward import build_reward_model

    rm = build_reward_model(policy_dir, level="token", loss="mean-bt")
    torch.nn.init.normal_(rm.model.score.weight if hasattr(rm.model, "score") else rm.model.classifier.weight)
    rm.save(tmp_path / "rm")
    out = tmp_path / "cli"
    args = ["ppo", "--policy", str(policy_dir), "--rm", str(tmp_path / "rm"), "--out", str(out), "--reward", "token",
            "--task", "ppo_fakes:FakeTask", "--iterations", "1", "--batch-size", "8", "--max-new-tokens", "6",
            "--minibatches", "2", "--ppo-epochs", "1", "--num-prompts", "16", "--value-init", "reward"]
    assert main(args) == 0
    log = json.loads((out / "ppo_log.jsonl").read_text())
    assert log["rm_score"] != 0 and (out / "config.json").exists()
    assert main(args[:-4] + ["--reward-scale", "whiten", "--reward", "token-shaped"]) == 2  # bad combination


def test_policy_whose_tokenizer_pads_with_eos_trains(policy_dir, tmp_path):
    """A GPT-2-style tokenizer with pad == EOS: load_tokenizer adds a pad the model has no embedding for;
    the rollout pads with EOS instead and the explicit masks keep everything else right."""
    tok = load_tokenizer(policy_dir)
    d = tmp_path / "pad_eos"
    load_causal_lm(policy_dir).save_pretrained(d)
    tok.pad_token = tok.eos_token
    tok.save_pretrained(d)
    result = train_ppo(_cfg(d, tmp_path / "out", iterations=1, ppo_epochs=1, save_steps=0),
                       reward_model=TableRewardModel(300), task=FakeTask())
    assert 1 < result["final"]["response_length"] <= 8 and result["final"]["kl_k1"] == 0.0
    # a pad beyond the embeddings pads with EOS; one the model embeds pads as itself
    assert embedded_pad_id(300, 0, vocab=300) == 0 and embedded_pad_id(tok.pad_token_id, 0, 300) == tok.pad_token_id


def test_prompt_indices_are_a_pure_function_disjoint_across_ranks():
    a = prompt_indices(100, 3, 8, 0, 2, seed=0)
    b = prompt_indices(100, 3, 8, 1, 2, seed=0)
    assert a == prompt_indices(100, 3, 8, 0, 2, seed=0) and not set(a) & set(b)
    epoch = [i for it in range(10) for i in prompt_indices(20, it, 2, 0, 1, seed=1)]
    assert sorted(epoch) == list(range(20))  # one pass over the pool per epoch


TWO_PROC_SCRIPT = """
import json, sys, torch
from ppo_fakes import FakeTask, TableRewardModel
from fgalign.rl.trainer import PPOConfig, train_ppo
from accelerate import PartialState
cfg = PPOConfig(**{cfg!r})
result = train_ppo(cfg, reward_model=TableRewardModel(300), task=FakeTask())
state = PartialState()
history = [{{k: v for k, v in r.items() if not k.startswith("time_")}} for r in result["history"]]
json.dump({{"rank": state.process_index, "world": state.num_processes, "history": history,
           "rng": torch.rand(1).item()}}, open(cfg.out + f"/rank{{state.process_index}}.json", "w"))
"""


def test_two_processes_under_accelerate_launch(policy_dir, tmp_path):
    out = tmp_path / "ddp"
    cfg = vars(_cfg(policy_dir, out, iterations=2, batch_size=4, minibatches=2, ppo_epochs=1))
    script = tmp_path / "ddp.py"
    script.write_text(TWO_PROC_SCRIPT.format(cfg=cfg))
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    proc = subprocess.run(cmd, env={**_env(), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["history"] == ranks[1]["history"]  # metrics averaged over ranks, β identical
    assert ranks[0]["rng"] != ranks[1]["rng"]  # per-rank seeds
    assert (out / "config.json").exists() and len((out / "ppo_log.jsonl").read_text().splitlines()) == 2


def test_critic_free_run_trains_no_value_model_and_resumes(policy_dir, tmp_path):
    """--value-init none with reinforce++: the policy learns, no value model is built or saved, and a resumed run
    continues from its checkpoint; gae without a critic is refused before any model loads."""
    out = tmp_path / "nocritic"
    kw = dict(value_init="none", advantage="reinforce++", save_steps=1)
    first = train_ppo(_cfg(policy_dir, out, iterations=1, **kw), reward_model=TableRewardModel(300), task=FakeTask())
    log = first["history"][-1]
    assert log["value_loss"] == 0.0 and log["policy_loss"] != 0.0 and math.isfinite(log["approx_kl"])
    assert load_causal_lm(out).state_dict()["lm_head.weight"].ne(load_causal_lm(policy_dir).state_dict()[
        "lm_head.weight"]).any()  # the update moved the policy
    resumed = train_ppo(_cfg(policy_dir, out, iterations=2, resume=True, **kw), reward_model=TableRewardModel(300),
                        task=FakeTask())
    assert [h["iteration"] for h in resumed["history"]][-1] == 2
    with pytest.raises(InputError, match="gae needs a learned critic"):
        train_ppo(_cfg(policy_dir, tmp_path / "gae", value_init="none"), reward_model=TableRewardModel(300),
                  task=FakeTask())


def test_bf16_ppo_runs_where_native_and_is_refused_where_emulated(policy_dir, tmp_path, monkeypatch):
    """--bf16: sampling, scoring and the update under bf16 autocast (the weights stay fp32); refused in one line on
    a CPU that would emulate it."""
    from fgalign.models import precision

    if precision.cpu_has_native_bf16():
        result = train_ppo(_cfg(policy_dir, tmp_path / "bf16", iterations=1, bf16=True),
                           reward_model=TableRewardModel(300), task=FakeTask())
        log = result["history"][-1]
        assert all(math.isfinite(log[k]) for k in ("policy_loss", "value_loss", "approx_kl", "kl_k1"))
        assert next(load_causal_lm(tmp_path / "bf16").parameters()).dtype == torch.float32
        # The next run in this process asks for fp32 and gets it (accelerate's one state per process is reset).
        from accelerate.state import AcceleratorState

        train_ppo(_cfg(policy_dir, tmp_path / "fp32", iterations=1), reward_model=TableRewardModel(300),
                  task=FakeTask())
        assert AcceleratorState().mixed_precision == "no"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(InputError, match="no native bf16"):
        train_ppo(_cfg(policy_dir, tmp_path / "refused", iterations=1, bf16=True, device="cpu"),
                  reward_model=TableRewardModel(300), task=FakeTask())

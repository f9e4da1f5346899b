"""`fgalign ppo`: PPO with a (B, T) reward from a token- or sequence-level reward model.

Loop per iteration (CleanRL-style, top to bottom): sample prompts → generate → score with the RM →
log-probs of policy and reference, values → rewards → GAE → epochs of clipped updates → KL controller →
log, evaluate, checkpoint. Runs single-process or under `accelerate launch` (one rollout batch per rank).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from fgalign.data.tokenize import encode_prompt
from fgalign.errors import InputError, require_int
from fgalign.models.precision import check_bf16
from fgalign.models.policy import load_causal_lm, load_tokenizer, resolve_device
from fgalign.models.reward import load_reward_model
from fgalign.models.value import ValueModel
from fgalign.rl.advantages import ESTIMATOR_NAMES
from fgalign.rl.checkpoint import STATE_FILE, check_run_dir, latest_checkpoint, save_checkpoint, save_policy
from fgalign.rl.config import PPOConfig  # the CLI and callers import it from here too
from fgalign.rl.kl import make_kl_controller
from fgalign.rl.metrics_log import MetricsLog
from fgalign.rl.oracle_reward import TaskRewardModel
from fgalign.rl.update import TrainingDiverged, experience_stats, make_experience, ppo_update
from fgalign.runinfo import preserved_rng, save_run_config, seed_everything
from fgalign.sampling.hf import embedded_pad_id, generate
from fgalign.sampling.rollout import SamplingConfig
from fgalign.sampling.vllm import VllmSampler, vllm_problem
from fgalign.tasks import load_task


def prompt_indices(n_pool: int, iteration: int, batch: int, rank: int, world: int, seed: int) -> list[int]:
    """The prompts of one iteration on one rank: a walk through seeded reshuffles of the pool.

    A pure function of the iteration, so the data position of a resumed run is the iteration number.
    """
    out = []
    for pos in range(iteration * batch * world + rank * batch, iteration * batch * world + (rank + 1) * batch):
        epoch, i = divmod(pos, n_pool)
        out.append(int(torch.randperm(n_pool, generator=torch.Generator().manual_seed(seed * 7919 + epoch))[i]))
    return out


def check_groups(cfg: PPOConfig) -> None:
    """Samples per prompt that divide the batch, and a group baseline only where there are groups."""
    require_int(cfg.group_size, 1, "--group-size", "a number of samples per prompt")
    if cfg.batch_size % cfg.group_size:
        raise InputError(f"batch size {cfg.batch_size} is not a multiple of --group-size {cfg.group_size}",
                         field="--group-size")
    if cfg.advantage not in ESTIMATOR_NAMES:
        raise InputError(f"unknown estimator '{cfg.advantage}': expected one of {ESTIMATOR_NAMES}", field="--advantage")
    if cfg.value_init == "none" and cfg.advantage == "gae":
        raise InputError("gae needs a learned critic: --value-init none goes with --advantage reinforce++ or rloo",
                         field="--value-init")
    if cfg.advantage == "rloo" and cfg.group_size < 2:
        raise InputError("rloo's baseline is the other samples of the same prompt: give --group-size 2 or more",
                         field="--group-size")


def policy_lr(cfg: PPOConfig, iteration: int) -> float:
    """The policy's learning rate at a 0-based iteration (the value model keeps its own constant rate)."""
    if cfg.lr_schedule == "linear":
        return cfg.lr * (1.0 - iteration / cfg.iterations)
    return cfg.lr


def _build_models(cfg: PPOConfig, tokenizer):
    policy = load_causal_lm(cfg.policy)
    ref_model = None
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(policy, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                   target_modules="all-linear", task_type="CAUSAL_LM"))
    else:
        ref_model = load_causal_lm(cfg.policy).eval().requires_grad_(False)
    vocab = policy.get_input_embeddings().num_embeddings
    if cfg.value_init == "none":  # a critic-free estimator: no second model to run and train
        value = None
    elif cfg.value_init == "policy":
        value = ValueModel.from_backbone_dir(cfg.policy, vocab)
    else:
        value = ValueModel.from_backbone_dir(cfg.rm, vocab, tokenizer=tokenizer)
    return policy, ref_model, value


def mixed_precision(bf16: bool) -> str:
    """The precision this run asks accelerate for: bf16 with --bf16, else accelerate's own setting
    (ACCELERATE_MIXED_PRECISION, set by `accelerate launch`).

    accelerate keeps one state per process and refuses another precision once it is set, while a pipeline runs
    every stage in one process: a state an earlier stage left with another precision is dropped first (the
    process group, PartialState, is kept), or a fp32 run after a bf16 one would silently run in bf16."""
    from accelerate.state import AcceleratorState

    wanted = "bf16" if bf16 else os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if AcceleratorState._shared_state.get("_mixed_precision", wanted) != wanted:
        AcceleratorState._reset_state(reset_partial_state=False)
    return wanted


def train_ppo(cfg: PPOConfig, eval_fn: Callable | None = None, *, reward_model=None, task=None) -> dict:
    """Train; returns {"out", "history", "evals", "final"}. `reward_model`/`task` objects override cfg.rm/cfg.task."""
    engines: list = []  # the vLLM engine of this run: shut down however the run ends (a pipeline makes ~10 runs)
    try:
        return _train_ppo(cfg, eval_fn, reward_model, task, engines)
    finally:
        for engine in engines:
            engine.close()


@dataclass
class _Run:
    """What the iterations of one PPO run share: built once by `_set_up`, read and advanced by the loop."""

    cfg: PPOConfig
    out: Path
    accelerator: Any
    tokenizer: Any
    task: Any
    reward_model: Any
    policy: Any  # prepared by accelerate (the update runs through it)
    value: Any
    raw_policy: Any  # unwrapped (sampling, scoring, saving)
    raw_value: Any
    ref_model: Any  # None with LoRA: the policy with its adapter disabled
    optimizers: tuple
    kl_ctl: Any
    vllm: Any
    pool: list  # encoded training prompts
    pool_text: list  # their texts: what the RM scores (a chat template's text is the policy's business)
    sampling: SamplingConfig
    pad_id: int
    log: MetricsLog
    start: int  # first iteration to run (a resumed run's checkpoint)
    last_good: Path | None  # the latest checkpoint, named when training diverges

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def _train_ppo(cfg: PPOConfig, eval_fn: Callable | None, reward_model, task, engines: list) -> dict:
    run = _set_up(cfg, reward_model, task, engines)
    history, evals = [], []
    for it in range(run.start, cfg.iterations):
        stats = _iteration(run, it)
        _bookkeeping(run, it, stats, eval_fn, evals)
        history.append(stats)
    run.log.close()
    if run.main:
        save_policy(run.raw_policy, run.tokenizer, run.out, cfg, extra={"final": history[-1] if history else {}})
    run.accelerator.wait_for_everyone()
    return {"out": str(run.out), "history": history, "evals": evals, "final": history[-1] if history else {}}


def _check(cfg: PPOConfig) -> None:
    """Everything that can be refused before a model is loaded."""
    if (problem := cfg.problem()) is not None:
        raise InputError(problem, field="--reward-scale")
    if cfg.batch_size < cfg.minibatches:
        raise InputError(f"batch_size {cfg.batch_size} < minibatches {cfg.minibatches}", field="--batch-size")
    check_groups(cfg)
    if cfg.rollout == "vllm" and (problem := vllm_problem()) is not None:
        raise InputError(problem, field="--rollout")  # before any model is loaded


def _set_up(cfg: PPOConfig, reward_model, task, engines: list) -> _Run:
    """Checks, models, optimizers, the KL controller, the prompt pool, and a resumed run's state."""
    from accelerate import Accelerator

    _check(cfg)
    out = Path(cfg.out)
    if int(os.environ.get("RANK", "0")) == 0:  # before accelerate starts: rank 0 alone checks (and clears)
        check_run_dir(out, cfg.resume, cfg.overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    check_bf16(cfg.bf16, device)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision(cfg.bf16))
    seed_everything(cfg.seed + accelerator.process_index)

    tokenizer = load_tokenizer(cfg.policy)
    policy, ref_model, value = _build_models(cfg, tokenizer)
    task = task or load_task(cfg.task)
    if reward_model is None and cfg.rm == "task":  # the oracle itself (a diagnostic: rl/oracle_reward.py)
        reward_model = TaskRewardModel(task)
    if reward_model is None:
        reward_model = load_reward_model(cfg.rm, device=accelerator.device, bf16=cfg.rm_bf16)
    if cfg.reward in ("token", "token+sequence") and (level := getattr(reward_model, "level", "token")) != "token":
        raise InputError(f"--reward {cfg.reward} needs per-token rewards, but {cfg.rm} is a {level}-level "
                         "RM: use --reward sequence (or token-shaped, from its prefix scores), or a token RM",
                         field="--reward")
    prompts = task.prompts("train", cfg.num_prompts, cfg.seed)
    pool = [encode_prompt(tokenizer, p) for p in prompts]
    if not pool or min(map(len, pool)) == 0:
        raise InputError("the task gave no prompts, or an empty one", field="--task")

    # Fused AdamW: one kernel for all parameters (CPU and CUDA); measurably faster for many small tensors.
    opt_policy = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr,
                                   weight_decay=cfg.weight_decay, fused=True)
    if value is None:
        policy, opt_policy = accelerator.prepare(policy, opt_policy)
        optimizers: tuple = (opt_policy,)
    else:
        opt_value = torch.optim.AdamW(value.parameters(), lr=cfg.value_lr, weight_decay=cfg.weight_decay,
                                      fused=True)
        policy, value, opt_policy, opt_value = accelerator.prepare(policy, value, opt_policy, opt_value)
        optimizers = (opt_policy, opt_value)
    if ref_model is not None:
        ref_model = ref_model.to(accelerator.device)
    kl_ctl = make_kl_controller(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon, cfg.kl_controller)

    vllm = None
    if cfg.rollout == "vllm":  # before load_state: the engine's worker seeds the process RNG when it starts
        if accelerator.num_processes > 1 or cfg.lora:
            raise InputError("vLLM rollouts run in one process on a full (not LoRA) policy", field="--rollout")
        # The policy's own dtype (vLLM's "auto" would sample an fp32 policy in bf16), and a context of the longest
        # prompt + response (the model's full context may not fit its KV cache in the engine's memory share).
        vllm = VllmSampler(cfg.policy, seed=cfg.seed, dtype=next(policy.parameters()).dtype,
                           max_model_len=max(map(len, pool)) + cfg.max_new_tokens)
        engines.append(vllm)
    start = 0
    if cfg.resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise InputError("--resume: no checkpoint found", path=str(out / "checkpoints"))
        accelerator.load_state(str(ckpt))  # models, optimizers, every rank's RNG states
        state = json.loads((ckpt / STATE_FILE).read_text())
        start = state["iteration"]
        kl_ctl.load_state_dict(state["kl_controller"])
    log = MetricsLog(out, resume_from=start if cfg.resume else None, enabled=accelerator.is_main_process)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_run_config(out / "ppo_log.jsonl", cfg, stage="ppo")

    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                              top_p=cfg.top_p)
    raw_policy = accelerator.unwrap_model(policy)
    raw_value = None if value is None else accelerator.unwrap_model(value)
    pad_id = embedded_pad_id(tokenizer.pad_token_id, tokenizer.eos_token_id,
                             raw_policy.get_input_embeddings().num_embeddings)
    if vllm is not None:
        vllm.load_weights(raw_policy)  # a resumed run continues from its checkpoint's weights
    return _Run(cfg, out, accelerator, tokenizer, task, reward_model, policy, value, raw_policy, raw_value, ref_model,
                optimizers, kl_ctl, vllm, pool, prompts, sampling,
                pad_id, log, start, latest_checkpoint(out) if cfg.resume else None)


def _iteration(run: _Run, it: int) -> dict:
    """One PPO iteration: sample, score, update; its statistics averaged over ranks, and β updated from them."""
    cfg, accelerator, tokenizer = run.cfg, run.accelerator, run.tokenizer
    rank, world = accelerator.process_index, accelerator.num_processes
    for group in run.optimizers[0].param_groups:  # a pure function of the iteration: resumes exactly
        group["lr"] = policy_lr(cfg, it)
    # group_size samples of each prompt, side by side: rows [g·k, (g+1)·k) share prompt g (group id g).
    idx = [i for i in prompt_indices(len(run.pool), it, cfg.batch_size // cfg.group_size, rank, world, cfg.seed)
           for _ in range(cfg.group_size)]
    group_ids = torch.arange(len(idx)) // cfg.group_size  # (B,)
    t0 = time.perf_counter()
    batch_prompts = [run.pool[i] for i in idx]
    # Under mixed precision the policy samples in it too, as π_old then scores it (bf16 on a 2-core CPU: 1.9x
    # faster per generated token on SmolLM2-135M).
    with accelerator.autocast():
        rollout = (generate(run.raw_policy, batch_prompts, tokenizer.eos_token_id, run.pad_id, run.sampling,
                            cfg.micro_batch)
                   if run.vllm is None else run.vllm.generate(batch_prompts, tokenizer.eos_token_id, run.pad_id,
                                                              run.sampling)
                   ).to(accelerator.device)
    t1 = time.perf_counter()
    rm_out = run.reward_model.score_responses(rollout.prompt_lists(), rollout.response_lists(), tokenizer,
                                              prompts=[run.pool_text[i] for i in idx])
    try:
        # cfg is a PPORewardSettings and an UpdateSettings (PPOConfig inherits both).
        exp = make_experience(rollout, rm_out, run.raw_policy, run.ref_model, run.raw_value, beta=run.kl_ctl.beta,
                              rs=cfg, gamma=cfg.gamma, lam=cfg.lam, whiten_advantages=cfg.whiten_advantages,
                              temperature=cfg.temperature, micro_batch=cfg.micro_batch, iteration=it + 1,
                              estimator=cfg.advantage, group_ids=group_ids, autocast=accelerator.autocast)
        t2 = time.perf_counter()
        stats = ppo_update(exp, run.policy, run.value, run.optimizers, us=cfg, accelerator=accelerator,
                           iteration=it + 1)
    except TrainingDiverged as e:
        where = f"; the last good checkpoint is {run.last_good}" if run.last_good else "; no checkpoint was saved yet"
        raise TrainingDiverged(f"{e}{where}") from None
    t3 = time.perf_counter()
    if run.vllm is not None:
        run.vllm.load_weights(run.raw_policy)  # the next rollouts come from the updated policy
    stats.update(experience_stats(exp))
    if cfg.log_task_score:
        texts = tokenizer.batch_decode(rollout.response_lists(), skip_special_tokens=True)
        stats["task_score"] = sum(run.task.score(run.pool_text[i], s) for i, s in zip(idx, texts)) / len(idx)
    # Averaged over ranks: every rank logs the same numbers and its KL controller sets the same β.
    names = sorted(stats)
    means = accelerator.reduce(torch.tensor([stats[k] for k in names], device=accelerator.device), "mean")
    stats = dict(zip(names, means.tolist()))
    stats.update(iteration=it + 1, beta=run.kl_ctl.beta, time_generate=t1 - t0, time_score=t2 - t1,
                 time_train=t3 - t2)
    # The controller holds the KL the reward is penalised with (k1 or k3), per response.
    run.kl_ctl.update(stats[f"kl_{cfg.kl_estimator}"], cfg.batch_size * world)
    return stats


def _bookkeeping(run: _Run, it: int, stats: dict, eval_fn: Callable | None, evals: list) -> None:
    """After an iteration: evaluate when due (into `stats` and `evals`), log, checkpoint."""
    cfg, accelerator = run.cfg, run.accelerator
    done = it + 1 == cfg.iterations
    if eval_fn is not None and ((it + 1) % max(cfg.eval_every, 1) == 0 or done):
        if run.main:
            # Evaluation must not shift the training RNG streams, and measures its KL to the reference in
            # the training's precision (under mixed precision the policy's forward autocasts, the
            # reference's would not).
            with preserved_rng(accelerator.device), accelerator.autocast():
                result = {f"eval_{k}": v for k, v in eval_fn(run.raw_policy, it + 1).items()}
            stats.update(result)
            evals.append({"iteration": it + 1, **result})
            if cfg.keep_eval_checkpoints:
                save_policy(run.raw_policy, run.tokenizer, run.out / "eval_checkpoints" / f"iter_{it + 1:06d}", cfg)
        accelerator.wait_for_everyone()
    run.log.log(stats, cfg.iterations)
    if (cfg.save_steps and (it + 1) % cfg.save_steps == 0) or done:
        run.last_good = save_checkpoint(accelerator, run.out, it + 1,
                                        {"iteration": it + 1, "kl_controller": run.kl_ctl.state_dict()})


def interrupted_message(cfg: PPOConfig) -> str:
    """What the CLI prints on Ctrl-C: where the run can continue from."""
    found = latest_checkpoint(Path(cfg.out))
    if found is None:
        return f"no checkpoint was saved yet in {cfg.out}; rerun with --overwrite to start again"
    return f"continue from {found} by rerunning the same command with --resume"


def run(cfg: PPOConfig) -> dict:
    """CLI entry: a diverged run exits with its message (the last good checkpoint is kept)."""
    try:
        return train_ppo(cfg)
    except TrainingDiverged as e:
        raise SystemExit(f"fgalign ppo: training diverged: {e}") from None


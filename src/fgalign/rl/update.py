"""One PPO iteration after sampling: score the rollout, build rewards and advantages, update the models.

Split from the trainer so the equivalence test can feed both reward paths the same rollout and compare
every tensor and the resulting parameters.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from fgalign.configfile import accepts_old_names
from fgalign.rl.kl import kl_per_token
from fgalign.rl.advantages import estimate_advantages
from fgalign.rl.ppo import ValueLoss, explained_variance, masked_mean, policy_loss, value_loss
from fgalign.rl.rewards import RewardSettings, compose_rewards, masked_whiten, rm_rewards, truncation_penalty
from fgalign.rl.scoring import in_micro_batches, policy_logprobs, values_of
from fgalign.models.side_by_side import can_run_side_by_side, run_side_by_side
from fgalign.sampling.rollout import Rollout


class TrainingDiverged(RuntimeError):
    """A NaN/inf in rewards, advantages or a loss: the run stops, the last good checkpoint stays."""


def check_finite(name: str, x: Tensor, iteration: int) -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise TrainingDiverged(f"iteration {iteration}: {bad} non-finite value(s) in {name}")


@dataclass
class PPORewardSettings(RewardSettings):
    """The RM's part of the reward (`RewardSettings`, fgalign.rl.rewards) plus what only fgalign's PPO loop adds to
    it. `PPOConfig` inherits these options (same names, same docs), and the trainer passes its config where a
    PPORewardSettings is asked."""

    reward_clip: float | None = None
    """Clip the RM's rewards to ±this (after scaling); None: off."""
    missing_eos_penalty: float | None = None
    """Subtracted at the last token of responses that hit max_new_tokens without EOS; None: off."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL in the reward: k1 = log π − log π_ref, k3 = exp(−k1) − 1 + k1."""


@dataclass
class Experience:
    rollout: Rollout
    logprobs: Tensor  # (B, T) π_old
    ref_logprobs: Tensor  # (B, T)
    values: Tensor  # (B, T) V_old
    rm_rewards: Tensor  # (B, T)
    kl: Tensor  # (B, T) the per-token KL in the reward
    rewards: Tensor  # (B, T)
    advantages: Tensor  # (B, T) whitened when asked
    returns: Tensor  # (B, T)
    sequence_score: Tensor  # (B,) the RM's raw score


@contextlib.contextmanager
def evaluating(*models):
    """Eval mode (dropout off) inside, each model's own mode restored after.

    π_old, π_ref and V must be what the update compares against: with dropout on, a policy identical to its
    reference shows a KL of many nats (issue 10). The update leaves the models in train mode.
    """
    models = [m for m in models if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def reference_context(policy, ref_model):
    """With LoRA the reference is the same model with its adapter disabled (no second copy)."""
    return policy.disable_adapter() if ref_model is None else contextlib.nullcontext()


@torch.no_grad()
def make_experience(rollout: Rollout, rm_out, policy, ref_model, value_model, beta: float, rs: PPORewardSettings,
                    gamma: float, lam: float, whiten_advantages: bool, temperature: float, micro_batch: int,
                    iteration: int = 0, estimator: str = "gae", group_ids: Tensor | None = None,
                    autocast=contextlib.nullcontext) -> Experience:
    """Score a rollout with π_old, π_ref and V, then rewards → advantages (`estimator`, fgalign.rl.advantages;
    `group_ids` (B,) marks samples of the same prompt). No parameter changes.

    `autocast`: the trainer's `accelerator.autocast`. Under bf16/fp16 mixed precision the prepared policy's forward
    autocasts but the reference (not prepared) would run in fp32, so identical weights would show a KL; both
    run inside it."""
    mask, last = rollout.response_mask, rollout.last_index

    def log_probs():  # π_old, then π_ref (with LoRA: the same model, so one after the other)
        with autocast():  # autocast state is per thread: entered in the thread that runs the forwards
            logprobs = in_micro_batches(lambda r: policy_logprobs(policy, r, temperature)[0], rollout, micro_batch)
            with reference_context(policy, ref_model):
                ref = policy if ref_model is None else ref_model
                return logprobs, in_micro_batches(lambda r: policy_logprobs(ref, r, temperature)[0], rollout,
                                                  micro_batch)

    def critic():  # no value model (a critic-free estimator): V = 0, which those estimators never read
        if value_model is None:
            return torch.zeros(mask.shape, device=mask.device)
        return in_micro_batches(lambda r: values_of(value_model, r), rollout, micro_batch)

    with evaluating(policy, ref_model, value_model):  # eval mode: no dropout, so no RNG in either thread
        models = [m for m in (policy, ref_model, value_model) if m is not None]
        (logprobs, ref_logprobs), values = run_side_by_side(log_probs, critic,
                                                            can_run_side_by_side(models, uses_rng=False))

    T = mask.shape[1]
    def fit(x: Tensor) -> Tensor:  # the RM pads to its longest response, at most our T
        return torch.nn.functional.pad(x.float().to(mask.device), (0, T - x.shape[1]))[:, :T]

    sequence_score = rm_out.sequence_score.float().to(mask.device)
    rm = rm_rewards(rs, fit(rm_out.token_rewards), fit(rm_out.prefix_scores), sequence_score, mask, last)
    if rs.missing_eos_penalty:
        rm = truncation_penalty(rm, rollout.truncated, last, rs.missing_eos_penalty)
    kl = kl_per_token(logprobs, ref_logprobs, mask, rs.kl_estimator)
    rewards = compose_rewards(rm, kl, beta, mask, clip=rs.reward_clip)
    check_finite("rewards", rewards, iteration)
    advantages, returns = estimate_advantages(estimator, rewards, values, mask, gamma=gamma, lam=lam,
                                              group_ids=None if group_ids is None else group_ids.to(mask.device))
    if whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    check_finite("advantages", advantages, iteration)
    return Experience(rollout, logprobs, ref_logprobs, values, rm, kl, rewards, advantages, returns, sequence_score)


@accepts_old_names
@dataclass
class UpdateSettings:
    """How one rollout batch updates policy and value (declared once, here; `PPOConfig` inherits them)."""

    RENAMED: ClassVar[dict[str, str]] = {"epochs": "ppo_epochs"}
    """Old option names still read, with a deprecation warning, until the next release."""

    ppo_epochs: int = 4
    """PPO passes over each rollout batch (TRL's num_ppo_epochs; not training epochs over a dataset)."""
    minibatches: int = 4
    """Minibatches per pass."""
    clip: float = 0.2
    """Policy ratio clip ε."""
    value_clip: float = 0.2
    """Value clip around the old values."""
    vf_coef: float = 0.5
    """Weight of the value loss in the summed loss."""
    entropy_coef: float = 0.0
    """Entropy bonus."""
    max_grad_norm: float = 1.0
    """Gradient clipping, per model."""
    temperature: float = 1.0
    """Sampling temperature; the log-probs use the same one."""


def backward(loss: Tensor, accelerator) -> None:
    """Backpropagate one model's loss (through accelerate's loss scaling under fp16)."""
    if accelerator is not None:
        accelerator.backward(loss)
    else:
        loss.backward()


def clip_and_step(models, optimizers, max_grad_norm: float, accelerator=None) -> None:
    """Clip each model's gradient norm on its own, then step every optimizer (optimizer i updates model i).

    Under fp16, accelerate keeps ONE GradScaler for all optimizers and assumes one optimizer: its
    `clip_grad_norm_` unscales every optimizer (a second call raised "unscale_() has already been called"),
    and its optimizer `step` calls `scaler.update()` after each optimizer, which resets the others' "unscaled"
    state, so the second optimizer's gradients would be unscaled twice. Hence torch's recipe for several
    optimizers (torch.amp docs, "multiple models, losses and optimizers"): unscale each once, clip, step each
    through the scaler (an inf skips that step), update the scale once. Without a scaler it is plain clipping.
    FSDP, DeepSpeed and XLA clip their own way (accelerate's `clip_grad_norm_`); PPO is not tested there.
    """
    from accelerate.utils import DistributedType

    own_way = accelerator is not None and accelerator.distributed_type in (
        DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.XLA)
    scaler = None if own_way else getattr(accelerator, "scaler", None)
    for model, opt in zip(models, optimizers):
        params = [p for p in model.parameters() if p.requires_grad]
        if own_way:
            accelerator.clip_grad_norm_(params, max_grad_norm)
            continue
        if scaler is not None:
            scaler.unscale_(getattr(opt, "optimizer", opt))  # the torch optimizer inside accelerate's wrapper
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    for opt in optimizers:
        if scaler is not None:
            scaler.step(getattr(opt, "optimizer", opt))
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.update()


STAT_NAMES = ("policy_loss", "value_loss", "clipfrac", "approx_kl", "value_clipfrac", "entropy")


def ppo_update(exp: Experience, policy, value_model, optimizers, us: UpdateSettings, accelerator=None,
               iteration: int = 0) -> dict[str, float]:
    """Several epochs of shuffled minibatches over one rollout (global torch RNG for the shuffles).

    Policy and value share no parameter, so each minibatch runs the policy's loss and backward and the value
    model's side by side (`fgalign.models.side_by_side`: two threads where that is safe, else one after the other);
    each model's gradients are those of the summed loss pl + vf_coef·vl. A non-finite loss stops the update
    before any optimizer step. Host syncs: one per minibatch (the finiteness check of both losses) and one for
    the statistics at the end (on CUDA each `float(tensor)` waits for the GPU).
    """
    B = len(exp.rollout)
    size = max(1, B // us.minibatches)
    stats: list[Tensor] = []
    models = (policy,) if value_model is None else (policy, value_model)  # no value model: critic-free
    for model in models:
        model.train()
    parallel = len(models) == 2 and can_run_side_by_side(models, accelerator)
    for _ in range(us.ppo_epochs):
        order = torch.randperm(B)
        for start in range(0, B - size + 1, size):
            idx = order[start:start + size]
            mb, mask = exp.rollout.select(idx), exp.rollout.response_mask[idx]

            def policy_step():
                logprobs, entropy = policy_logprobs(policy, mb, us.temperature, with_entropy=True,
                                                    entropy_grad=bool(us.entropy_coef))
                pl = policy_loss(logprobs, exp.logprobs[idx], exp.advantages[idx], mask, us.clip)
                mean_entropy = masked_mean(entropy, mask)
                # Without a bonus the entropy was computed without a graph (a statistic only).
                loss = pl.loss - us.entropy_coef * mean_entropy if us.entropy_coef else pl.loss
                backward(loss, accelerator)
                return pl, mean_entropy, loss.detach()

            def value_step():
                if value_model is None:  # critic-free: nothing to fit, and 0 in the statistics
                    zero = torch.zeros((), device=mask.device)
                    return ValueLoss(zero, zero)
                vl = value_loss(values_of(value_model, mb), exp.values[idx], exp.returns[idx], mask, us.value_clip)
                backward(us.vf_coef * vl.loss, accelerator)
                return vl

            (pl, mean_entropy, loss), vl = run_side_by_side(policy_step, value_step, parallel)
            check_finite("loss", torch.stack([loss, vl.loss.detach()]), iteration)  # before any optimizer step
            clip_and_step(models, optimizers, us.max_grad_norm, accelerator)
            stats.append(torch.stack([pl.loss, vl.loss, pl.clipfrac, pl.approx_kl, vl.clipfrac, mean_entropy])
                         .detach().double())
    if not stats:
        return {}
    return dict(zip(STAT_NAMES, torch.stack(stats).mean(0).tolist()))  # one transfer for all statistics


def experience_stats(exp: Experience) -> dict[str, float]:
    """Per-response means of what the reward was made of, and the critic's fit before the update (one transfer to
    the host for all of them: on CUDA each `float(tensor)` is a sync)."""
    mask = exp.rollout.response_mask
    k3 = kl_per_token(exp.logprobs, exp.ref_logprobs, mask, "k3")
    k1 = kl_per_token(exp.logprobs, exp.ref_logprobs, mask, "k1")
    stats = {
        "rm_score": exp.sequence_score.mean(),
        "rm_reward": exp.rm_rewards.sum(1).mean(),
        "reward": exp.rewards.sum(1).mean(),
        "kl_k1": k1.sum(1).mean(),
        "kl_k3": k3.sum(1).mean(),
        "explained_variance": explained_variance(exp.values, exp.returns, mask),
        "response_length": mask.sum(1).float().mean(),
        "truncation_rate": exp.rollout.truncated.float().mean(),
    }
    return dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist()))

"""`fgalign ppo`'s options: one dataclass, the reward and update options inherited from where they are declared
(fgalign.rl.rewards, fgalign.rl.update), so that every consumer reads the same names, docs and defaults."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from fgalign.configfile import accepts_old_names
from fgalign.rl.advantages import AdvantageEstimator
from fgalign.rl.update import PPORewardSettings, UpdateSettings


@dataclass
class PPOPaths:
    """Where PPO reads its models and writes its outputs."""

    policy: str
    """Initial policy: a local Hugging Face causal-LM directory (the SFT model); also the reference."""
    rm: str
    """Reward model directory (`fgalign train-rm`), token- or sequence-level; or "task": the task's oracle (its
    gold score; per token, −1 on what its minimal edit changes), to see what PPO reaches with a perfect RM."""
    out: str
    """Output directory: the trained policy (save_pretrained), logs, TensorBoard, checkpoints."""


# The reward and update options are declared once, in fgalign.rl.rewards and fgalign.rl.update, and inherited
# here. Bases are listed in reverse because dataclass fields come from the last base first: --help shows paths,
# reward, update options, then the loop's own.
@accepts_old_names
@dataclass
class PPOConfig(UpdateSettings, PPORewardSettings, PPOPaths):
    """Fine-grained PPO. Defaults suit a 2-layer 128-d GPT-2 on CPU (a few seconds per iteration)."""

    RENAMED: ClassVar[dict[str, str]] = {"n_prompts": "num_prompts", "epochs": "ppo_epochs",
                                         "checkpoint_every": "save_steps"}
    """Old option names (CLI and YAML) still read, with a deprecation line, until the next release."""

    task: str = "default"
    """Where PPO prompts come from: a built-in task or `package.module:Class`."""
    num_prompts: int = 4096
    """Size of the training prompt pool (task split "train")."""
    iterations: int = 60
    """PPO iterations (one rollout batch each)."""
    batch_size: int = 64
    """Rollouts per iteration per process."""
    max_new_tokens: int = 24
    """Longest response (EOS included)."""
    top_k: int = 0
    """Top-k sampling (0: off)."""
    top_p: float = 1.0
    """Nucleus sampling (1.0: off)."""
    lr: float = 1e-4
    """Policy learning rate (AdamW). 1e-4: at 3e-5 the tiny built-in policies could not reach a 1-nat KL target
    in 40 iterations (KL ≤ 0.7, so the controller had nothing to hold); at 1e-4 they reach it in ~5."""
    value_lr: float = 1e-4
    """Value model learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay of both models. 0, as in TRL: decay pulls the policy towards 0, not towards the
    reference the KL term already keeps it near."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """Learning-rate schedule over the iterations: constant, or linear decay to 0 at the last iteration."""
    gamma: float = 1.0
    """Discount."""
    lam: float = 0.95
    """GAE λ."""
    advantage: AdvantageEstimator = "gae"
    """Advantage estimator (fgalign.rl.advantages), each on the per-token rewards: gae (learned critic),
    reinforce++ (returns-to-go minus the batch mean) or rloo (minus the other samples of the same prompt;
    needs --group-size >= 2)."""
    group_size: int = 1
    """Samples per prompt in a rollout batch: batch_size / group_size prompts, each sampled group_size times."""
    whiten_advantages: bool = True
    """Whiten advantages over the batch's response tokens."""
    kl_coef: float = 0.3
    """β: the initial KL coefficient (fixed when kl_target is None). 0.3 is near the β that held 1 nat in the
    built-in worlds; the controller moves it from there."""
    kl_target: float | None = 1.0
    """The KL to the reference, in nats per response, that the controller moves β to hold (so methods compare at
    one KL); None: fixed β. Not an early-stopping threshold (CleanRL's `target_kl` stops an update's epochs
    early); no update is cut short."""
    kl_controller: Literal["pi", "ziegler"] = "pi"
    """How β follows kl_target: "pi" (log-space PI on a one-step prediction, see fgalign.rl.kl) or "ziegler"
    (Ziegler et al. 2019, kept for comparison: it cycles)."""
    kl_horizon: float = 128
    """Ziegler controller horizon, in responses: β moves by at most 20% · batch / horizon per iteration."""
    value_init: Literal["policy", "reward", "none"] = "policy"
    """Initialise the value model's backbone from the policy or from the reward model (same vocabulary); "none":
    no value model at all, for the critic-free estimators (reinforce++, rloo). On a real model the critic is a
    second full model to run and train: without it an iteration does a third less work."""
    lora: bool = False
    """Train a LoRA adapter on the policy (peft); the reference is the policy with the adapter disabled."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    micro_batch: int = 64
    """Rows per forward pass when generating and scoring (bounds memory)."""
    rollout: Literal["hf", "vllm"] = "hf"
    """Who samples: "hf" (transformers' generate) or "vllm" (a vLLM engine on the training GPU, weights synced
    after every update, log-probs recomputed by the training model; one process, no LoRA; untested on GPU)."""
    save_steps: int = 10
    """Save a resumable checkpoint every N iterations (and at the end); 0: only at the end (as sft/train-rm's
    --save-steps, a PPO step being one iteration)."""
    resume: bool = False
    """Continue from the latest checkpoint in `out`."""
    overwrite: bool = False
    """Start afresh in an `out` that holds an earlier PPO run (removed); without it, or --resume, it is refused."""
    eval_every: int = 10
    """Call the evaluation callback every N iterations (and at the end); library use only."""
    keep_eval_checkpoints: bool = False
    """Keep the policy of each evaluated iteration in out/eval_checkpoints/iter_N (for selection)."""
    log_task_score: bool = True
    """Also log the task's own score of the sampled responses (the oracle, in the built-in worlds)."""
    seed: int = 0
    """Seed; process r uses seed + r."""
    bf16: bool = False
    """Train and score the policy in bf16 mixed precision (autocast over fp32 weights; only where the device has
    native bf16). On a 135M model on 2 CPU cores it makes the update ~1.8x faster (README "On a real model")."""
    rm_bf16: bool = False
    """Score rollouts with the RM under bf16 autocast (only where the device has native bf16)."""
    device: str = "auto"
    """"auto", "cpu" or "cuda"."""
    threads: int | None = None
    """CPU threads for torch (None: torch's default). 1 is much faster on a CPU shared with other jobs."""

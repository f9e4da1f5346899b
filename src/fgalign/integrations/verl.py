"""fgalign's reward model inside verl 0.9: dense (B, T) rewards on verl's response tokens.

verl's PPO already *consumes* dense rewards: it copies `rm_scores` into `token_level_scores`, subtracts β·KL
per token when `algorithm.use_kl_in_reward=True` and runs GAE on the per-token rewards. What it lacks is a
way to *produce* them: its reward loop returns one float per trajectory, which the agent loop writes on the
last response token (`assemble_rm_scores`, the other hook, only runs on the colocated path that verl takes
when it serves a reward model of its own). So the plug-in has two parts, both loaded through verl's config:

1. `FgalignRewardManager` — `reward.reward_manager.source=importlib`,
   `reward.reward_manager.module.path=pkg://fgalign.integrations.verl`,
   `reward.reward_manager.name=FgalignRewardManager`. It runs in verl's reward workers (Ray actors,
   `reward.num_workers` of them, spread over the nodes) and scores each rollout as soon as it is generated:
   verl's scalar is the RM's sequence score, and `reward_extra_info` carries the RM's per-token rewards and
   prefix scores on the policy's response tokens (projected through character offsets when the RM's
   tokenizer differs: `RewardModel.score_responses`). Such an RM reads the user's prompt, not the policy's
   chat template decoded: verl's `raw_prompt` messages, else the prompt ids with the template stripped
   (`fgalign.integrations.chat`).
2. The placement, with `fgalign.rl.rewards.rm_rewards` — the function fgalign's own PPO calls:
   - verl's default trainer (`trainer.use_v1=True`) stores each trajectory as `AgentLoopOutput.as_dict()`
     makes it: the agent loop `FgalignSingleTurnAgentLoop` (`actor_rollout_ref.rollout.agent.
     default_agent_loop=fgalign_single_turn`, registered by examples/verl/agent_loops.yaml) returns outputs
     whose `as_dict` writes the dense row. One trajectory at a time, so scales `raw` and `mean` only, and
     `token_center: none` (a batch median needs the batch).
   - the legacy trainer (`trainer.use_v1=False`) batches trajectories first: `FgalignAgentLoopManager`
     (`+actor_rollout_ref.rollout.agent.agent_loop_manager_class=...`) places the rewards on the whole
     batch, so the batch-level settings (median centring, total-std, whiten) mean what they mean in
     `fgalign ppo`, whose defaults they are.

With neither, verl trains on the RM's sequence score at the last token (fgalign's `sequence` mode, raw
scale); the reward manager refuses any other setting then, rather than train on something else. Settings
live under `reward.reward_kwargs.fgalign` (`FgalignVerlSettings`: `fgalign ppo`'s `RewardSettings`, with its
defaults, plus the RM's path). Single-turn rollouts: the RM scores the whole response.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from verl import DataProto
from pydantic import PrivateAttr
from verl.experimental.agent_loop import AgentLoopManager
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.utils.ray_utils import auto_await

from fgalign.errors import InputError
from fgalign.integrations.chat import reward_prompts
from fgalign.models.reward import RewardModel, load_reward_model
from fgalign.rl.rewards import SEQUENCE_AT_LAST, RewardSettings, rm_rewards

TOKEN_KEY, PREFIX_KEY, SEQUENCE_KEY = "fgalign_token_rewards", "fgalign_prefix_scores", "fgalign_sequence_score"
ROW_KEYS = (TOKEN_KEY, PREFIX_KEY)  # per-token rows: moved into rm_scores, then dropped from the batch
MANAGER_FQN = "fgalign.integrations.verl.FgalignAgentLoopManager"
AGENT_LOOP_NAME = "fgalign_single_turn"  # examples/verl/agent_loops.yaml registers it under this name
PER_TRAJECTORY_SCALES = ("raw", "mean")  # what one trajectory at a time can compute


@dataclass
class FgalignVerlSettings(RewardSettings):
    """`reward.reward_kwargs.fgalign` in verl's config: `fgalign ppo`'s reward settings (`RewardSettings`: reward,
    reward_scale, alpha, token_center — same names, same defaults, same check), plus where the RM is and runs."""

    rm: str = ""
    """Reward model directory saved by `fgalign train-rm` (token- or sequence-level). Required."""
    device: str = "auto"
    """Where the RM runs inside each reward worker: auto (CUDA when the worker sees a GPU), cpu, cuda."""

    @classmethod
    def from_verl_config(cls, config: Any) -> "FgalignVerlSettings":
        raw = (config.reward.get("reward_kwargs") or {}).get("fgalign")
        if raw is None:
            raise InputError("missing: set reward.reward_kwargs.fgalign.rm to an fgalign reward model directory",
                             field="reward.reward_kwargs.fgalign")
        raw = dict(raw)
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(raw) - known):
            raise InputError(f"unknown setting(s) {unknown}: expected some of {sorted(known)}",
                             field="reward.reward_kwargs.fgalign")
        if not raw.get("rm"):
            raise InputError("missing: an fgalign reward model directory", field="reward.reward_kwargs.fgalign.rm")
        settings = cls(**raw)
        if (problem := settings.problem()) is not None:
            raise InputError(problem, field="reward.reward_kwargs.fgalign")
        return settings

    @property
    def needs_placement(self) -> bool:
        """Anything but the sequence score at the last token needs part 2 (the placement)."""
        return (self.reward, self.reward_scale) != (SEQUENCE_AT_LAST.reward, SEQUENCE_AT_LAST.reward_scale)


def check_verl_config(config: Any, settings: FgalignVerlSettings) -> None:
    """Refuse set-ups in which verl would silently bypass the plug-in or drop its dense rewards."""
    if config.reward.reward_model.get("enable", False):
        raise InputError("must be False: the fgalign RM runs inside verl's reward workers, not as a served "
                         "model (with it on, verl scores with its own RM server instead)",
                         field="reward.reward_model.enable")
    if config.reward.get("custom_reward_function", {}).get("path"):
        raise InputError("must be unset with the fgalign reward manager (it is the reward)",
                         field="reward.custom_reward_function.path")
    if not settings.needs_placement:
        return
    agent = config.actor_rollout_ref.rollout.get("agent") or {}
    if (config.get("trainer") or {}).get("use_v1", True):  # verl 0.9's default trainer
        if _is_fgalign_manager(agent.get("agent_loop_manager_class")):
            raise InputError(f"{MANAGER_FQN} is for the legacy trainer (trainer.use_v1=False); the v1 trainer "
                             f"needs its own manager: remove it", field="actor_rollout_ref.rollout.agent")
        if agent.get("default_agent_loop") != AGENT_LOOP_NAME:
            raise InputError(f"must be '{AGENT_LOOP_NAME}' (registered by examples/verl/agent_loops.yaml through "
                             f"actor_rollout_ref.rollout.agent.agent_loop_config_path) for reward "
                             f"'{settings.reward}': without it verl puts one score on the last token",
                             field="actor_rollout_ref.rollout.agent.default_agent_loop")
        if settings.reward_scale not in PER_TRAJECTORY_SCALES:
            raise InputError(f"reward scale '{settings.reward_scale}' needs the whole batch, and verl's v1 trainer "
                             f"stores rewards one trajectory at a time: use one of {PER_TRAJECTORY_SCALES}, or "
                             f"trainer.use_v1=False with agent_loop_manager_class={MANAGER_FQN}",
                             field="reward.reward_kwargs.fgalign.reward_scale")
        if settings.token_center != "none" and settings.reward in ("token", "token+sequence"):
            raise InputError(f"token_center '{settings.token_center}' subtracts the batch's median token reward, "
                             "and verl's v1 trainer stores rewards one trajectory at a time: set token_center: none "
                             f"(uncentred r_t), or use trainer.use_v1=False with agent_loop_manager_class="
                             f"{MANAGER_FQN} to get fgalign ppo's default", field="reward.reward_kwargs.fgalign.token_center")
    elif not _is_fgalign_manager(agent.get("agent_loop_manager_class")):
        raise InputError(f"reward '{settings.reward}' with scale '{settings.reward_scale}' needs "
                         f"+actor_rollout_ref.rollout.agent.agent_loop_manager_class={MANAGER_FQN}: without it "
                         "verl puts one score on the last token", field="actor_rollout_ref.rollout.agent")


def _is_fgalign_manager(fqn: str | None) -> bool:
    if not fqn:
        return False
    from verl.utils.import_utils import load_class_from_fqn

    return issubclass(load_class_from_fqn(fqn, "AgentLoopManager"), FgalignAgentLoopManager)


# ---- verl's batch layout -------------------------------------------------------------------------------
def valid_token_ids(batch: Any) -> tuple[list[list[int]], list[list[int]]]:
    """Each row's prompt and response ids without padding, from verl's layout: `prompts` (B, P) left-padded,
    `responses` (B, R) right-padded, `attention_mask` (B, P + R) marking the real tokens."""
    P = batch["prompts"].shape[1]
    mask = batch["attention_mask"].bool()
    prompts = [row[m].tolist() for row, m in zip(batch["prompts"], mask[:, :P])]
    lengths = mask[:, P:].sum(dim=1).tolist()
    responses = [row[:n].tolist() for row, n in zip(batch["responses"], lengths)]
    return prompts, responses


def raw_prompts(non_tensor_batch: dict, rows: int) -> list[Any] | None:
    """Each row's chat messages as verl's dataset gave them (`raw_prompt`, which verl's agent loop passes on to
    the reward worker), or None when the batch has none."""
    raw = non_tensor_batch.get("raw_prompt") if non_tensor_batch else None
    if raw is None or len(raw) != rows:
        return None
    return [raw[b] for b in range(rows)]


def response_mask_of(batch: Any) -> torch.Tensor:
    """(B, R) bool: the real response tokens (what verl's own `compute_response_mask` returns)."""
    P = batch["prompts"].shape[1]
    return batch["attention_mask"][:, P:].bool()


# ---- scoring (reward workers) --------------------------------------------------------------------------
_MODELS: dict[tuple[str, str], RewardModel] = {}
_SCORING = threading.Lock()  # one forward pass at a time per worker: concurrent ones only oversubscribe


def cached_reward_model(path: str, device: str) -> RewardModel:
    """Load an RM once per worker process (verl may build several managers in one worker)."""
    key = (str(Path(path).resolve()), device)
    if key not in _MODELS:
        _MODELS[key] = load_reward_model(path, device=device)
    return _MODELS[key]


def score_rows(rm: RewardModel, tokenizer: Any, prompt_ids: Sequence[Sequence[int]],
               response_ids: Sequence[Sequence[int]], width: int, prompts: Sequence[Any] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The RM's token rewards and prefix scores on the policy's response tokens, each row zero-padded to
    `width` — (B, width), (B, width) — and its sequence scores (B,). An empty response scores 0.

    `prompts`: each row's prompt as the RM reads it when its vocabulary differs from the policy's
    (`integrations.chat.reward_prompts`: the user's text, not the policy's chat template decoded)."""
    B = len(response_ids)
    token_rewards, prefix = np.zeros((B, width), np.float32), np.zeros((B, width), np.float32)
    sequence = np.zeros(B, np.float32)
    scored = [i for i, r in enumerate(response_ids) if len(r) > 0]
    if not scored:
        return token_rewards, prefix, sequence
    if (longest := max(len(response_ids[i]) for i in scored)) > width:
        raise ValueError(f"a response of {longest} tokens is longer than the rollout's response_length {width}")
    with _SCORING:
        out = rm.score_responses([prompt_ids[i] for i in scored], [response_ids[i] for i in scored], tokenizer,
                                 prompts=None if prompts is None else [prompts[i] for i in scored])
    for j, i in enumerate(scored):
        n = len(response_ids[i])
        token_rewards[i, :n] = out.token_rewards[j, :n].numpy()
        prefix[i, :n] = out.prefix_scores[j, :n].numpy()
        sequence[i] = float(out.sequence_score[j])
    return token_rewards, prefix, sequence


class FgalignRewardManager(RewardManagerBase):
    """verl reward manager: an fgalign RM scores each rollout; per-token rows ride in `reward_extra_info`."""

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, reward_router_address: Any = None,
                 reward_model_tokenizer: Any = None, **_: Any):
        super().__init__(config, tokenizer, compute_score)
        self.settings = FgalignVerlSettings.from_verl_config(config)
        check_verl_config(config, self.settings)
        # The agent loop pads every response to this width; equal-length rows stack into one array.
        self.width = int(config.actor_rollout_ref.rollout.response_length)
        self.rm = cached_reward_model(self.settings.rm, self.settings.device)

    def score(self, data: DataProto) -> list[dict]:
        """verl's result dict for every row of `data` (synchronous; `run_single` runs it off the event loop)."""
        prompts, responses = valid_token_ids(data.batch)
        # verl's prompt ids hold the policy's chat template; an RM with another vocabulary reads the user's text
        # (verl's raw_prompt messages, else the ids with the template stripped), as in fgalign's own PPO.
        texts = reward_prompts(prompts, self.tokenizer, self.rm.tokenizer,
                               raw_prompts(data.non_tensor_batch, len(prompts)))
        tok, pre, seq = score_rows(self.rm, self.tokenizer, prompts, responses, self.width, texts)
        return [{"reward_score": float(seq[b]),
                 "reward_extra_info": {TOKEN_KEY: tok[b].tolist(), PREFIX_KEY: pre[b].tolist(),
                                       SEQUENCE_KEY: float(seq[b])}}
                for b in range(len(responses))]

    async def run_single(self, data: DataProto) -> dict:
        # A multi-output trajectory is scored on its last output, as verl's own managers do.
        loop = asyncio.get_running_loop()  # the caller's loop (verl's worker loop or a test's)
        results = await loop.run_in_executor(None, self.score, data[-1:])
        return results[0]


# ---- placement, verl's legacy trainer (the whole batch, on the driver) ---------------------------------
def dense_rm_scores(settings: FgalignVerlSettings, token_rewards: torch.Tensor, prefix_scores: torch.Tensor,
                    sequence_score: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """verl's `rm_scores` (B, R) from the RM's rows: `fgalign.rl.rewards.rm_rewards`, zero off the response."""
    mask = response_mask.bool()
    last_index = (mask.sum(dim=1) - 1).clamp_min(0)  # (B,) the last response token
    rm = rm_rewards(settings, token_rewards.float(), prefix_scores.float(), sequence_score.float(), mask, last_index)
    return torch.where(mask, rm, 0.0).float()


def place_dense_rewards(output: DataProto, settings: FgalignVerlSettings) -> DataProto:
    """Replace verl's last-token `rm_scores` by fgalign's dense rewards; drop the rows from the batch."""
    nt = output.non_tensor_batch
    missing = [k for k in (*ROW_KEYS, SEQUENCE_KEY) if k not in nt]
    if missing:
        raise InputError(f"the rollout batch has no {missing}: reward.reward_manager must be FgalignRewardManager "
                         "(source importlib, module.path pkg://fgalign.integrations.verl)",
                         field="reward.reward_manager")
    mask = response_mask_of(output.batch)
    R = mask.shape[1]

    def rows(key: str) -> torch.Tensor:  # (B, W) -> (B, R); the workers padded to the configured width
        x = torch.as_tensor(np.asarray(nt.pop(key), dtype=np.float32))
        return torch.nn.functional.pad(x, (0, max(0, R - x.shape[1])))[:, :R]

    token_rewards, prefix = rows(TOKEN_KEY), rows(PREFIX_KEY)
    sequence = torch.as_tensor(np.asarray(nt[SEQUENCE_KEY], dtype=np.float32))
    output.batch["rm_scores"] = dense_rm_scores(settings, token_rewards, prefix, sequence, mask)
    keys = output.meta_info.get("reward_extra_keys")
    if keys is not None:
        output.meta_info["reward_extra_keys"] = [k for k in keys if k not in ROW_KEYS]
    if "reward_extra_info" in nt:  # the agent loop also keeps each worker's dict: drop the rows there too
        nt["reward_extra_info"] = np.array([{k: v for k, v in (info or {}).items() if k not in ROW_KEYS}
                                            for info in nt["reward_extra_info"]], dtype=object)
    return output


class FgalignAgentLoopManager(AgentLoopManager):
    """verl's agent-loop manager, plus fgalign's dense rewards placed on every rollout batch it returns."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        self.fgalign_settings = FgalignVerlSettings.from_verl_config(config)  # fail before any rollout
        super().__init__(config, *args, **kwargs)

    @auto_await
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        output = await super().generate_sequences(prompts)
        return place_dense_rewards(output, self.fgalign_settings)


# ---- placement, verl's v1 trainer (one trajectory at a time, in the agent-loop workers) ----------------
class DenseRewardOutput(AgentLoopOutput):
    """verl's agent-loop output; its `as_dict` (what the v1 trainer stores) carries fgalign's dense rm_scores."""

    _fgalign: Any = PrivateAttr(default=None)

    @classmethod
    def of(cls, output: AgentLoopOutput, settings: FgalignVerlSettings) -> "DenseRewardOutput":
        # Only the fields that were set, so that as_dict's exclude_unset behaves as for the original.
        fields_set = {name: getattr(output, name) for name in output.model_fields_set}
        dense = cls(**{**fields_set, "extra_fields": output.extra_fields})
        dense._fgalign = settings
        return dense

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        info = (out.get("extra_fields") or {}).get("reward_extra_info") or {}
        if self.reward_score is None or TOKEN_KEY not in info:  # not scored by FgalignRewardManager
            return out
        n = out["responses"].shape[0]
        if n == 0:  # nothing was generated: no token to reward
            return out
        row = lambda key: torch.tensor(info[key][:n], dtype=torch.float32)[None]  # noqa: E731 - (1, n)
        sequence = torch.tensor([info[SEQUENCE_KEY]], dtype=torch.float32)
        out["rm_scores"] = dense_rm_scores(self._fgalign, row(TOKEN_KEY), row(PREFIX_KEY), sequence,
                                           torch.ones(1, n, dtype=torch.bool))[0]
        out["extra_fields"]["reward_extra_info"] = {k: v for k, v in info.items() if k not in ROW_KEYS}
        return out


class FgalignSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn agent loop whose outputs carry fgalign's dense rewards into the v1 trainer."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fgalign_settings = FgalignVerlSettings.from_verl_config(self.config)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        return DenseRewardOutput.of(await super().run(sampling_params, **kwargs), self.fgalign_settings)

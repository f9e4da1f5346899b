"""Token-level and sequence-level reward models: any HF backbone plus a scalar head at every position.

Both levels are one Hugging Face `...ForTokenClassification` model with a single output, so a saved RM
loads with plain `AutoModelForTokenClassification.from_pretrained`. The head's value h_t at position t:
- token RM: r_t = h_t (for a causal backbone r(x, y_<=t); for an encoder the contextual score of token t);
  sequence score R(y) = mean of r_t over response tokens; prefix score S_t = running mean of r_1..r_t.
- sequence RM: score = h at the last response token (for an encoder, which attends both ways, that
  position acts as a learned pooling of the whole text); prefix score S_t = h_t for a causal backbone.

Sequences are prompt ids + response ids (tokenized separately, `fgalign.data.tokenize`), right-padded,
with explicit `response_mask` and `last_index`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from fgalign.data.tokenize import check_tokenizer, encode_prompt, encode_response, token_spans
from fgalign.errors import InputError
from fgalign.models import projection
from fgalign.models.activations import fuse_gelu
from fgalign.models.masks import at_last_index, gather_last, masked_mean
from fgalign.models.policy import resolve_device
from fgalign.models.precision import check_bf16
from fgalign.models.sources import ModelSource, check_model_dir, load_config, load_pretrained, resolve_model, tokenizer_kwargs
from fgalign.models.reward_losses import prefix_means
from fgalign.runinfo import write_json

RM_META_FILE = "fgalign_rm.json"
HEAD = "token-classification head, 1 output per position"


@dataclass
class RewardModelInfo:
    """What a saved RM is; written as `fgalign_rm.json` beside the weights."""

    level: str
    """"token" or "sequence"."""
    backbone_kind: str
    """"causal" (sees x, y_<=t at position t) or "encoder" (sees the whole text)."""
    loss: str
    """Training loss: mistake-bce, token-bce, edit-bt, mean-bt (token RM) or bt (sequence RM)."""
    anchor: float = 0.0
    """Zero-anchoring weight used in training (token RM)."""
    pairs: str = "edit"
    """Training pairs: "edit" (edited > original) or "preference" (chosen > rejected)."""
    label_mode: str = "tokens"
    """How token labels were aligned: "tokens" or "chars". The default only reads RMs saved before this field
    existed, all trained with "tokens"; train-rm always records the mode it used."""
    backbone: str = ""
    """Where the backbone came from."""
    head: str = HEAD


@dataclass
class RewardOutput:
    """Rewards on the caller's response tokens; T = longest response, right-padded with 0."""

    token_rewards: torch.Tensor
    """(B, T) r_t, 0 outside the response; sequence RM: 0 except its score at the last response token."""
    prefix_scores: torch.Tensor
    """(B, T) S_t, the score of the prefix y_<=t (0 outside the response)."""
    sequence_score: torch.Tensor
    """(B,) token RM: mean r_t over its response tokens; sequence RM: the score at the last token."""


def detect_backbone_kind(config: Any) -> str:
    """ "causal" when the saved architecture is a decoder LM (GPT-2, Llama, ...), else "encoder"."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or getattr(config, "is_decoder", False):
        return "causal"
    if config.model_type in ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "phi3", "gemma", "opt"):
        return "causal"
    return "encoder"


def load_rm_tokenizer(path: str | Path | ModelSource) -> Any:
    """The backbone's tokenizer with an EOS (an encoder's [SEP] ends responses) and a pad distinct from it."""
    from transformers import AutoTokenizer

    source = path if isinstance(path, ModelSource) else ModelSource(Path(path))
    try:
        tok = AutoTokenizer.from_pretrained(str(source.directory), **tokenizer_kwargs(source))
    except Exception as e:  # noqa: BLE001 - a broken user directory
        raise InputError(f"cannot load a tokenizer: {e}", path=str(source)) from None
    if tok.eos_token_id is None and tok.sep_token is not None:
        tok.eos_token = tok.sep_token
    check_tokenizer(tok)
    return tok


def head_module(model: torch.nn.Module) -> torch.nn.Module:
    """The scalar head of a ...ForTokenClassification model (its name differs by family)."""
    for name in ("classifier", "score"):
        if isinstance(getattr(model, name, None), torch.nn.Linear):
            return getattr(model, name)
    raise ValueError(f"cannot find the head of {type(model).__name__}")


def pad_batch(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int,
              labels: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response ids with explicit masks.

    Returns input_ids, attention_mask, response_mask, labels (0 outside the response) — all (B, L) —
    and last_index (B,), the position of each response's last token.
    """
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    B, L = len(lengths), max(lengths)
    for b, r in enumerate(response_ids):
        if not r:
            raise ValueError(f"response {b} is empty: a reward needs at least one response token")
        if labels is not None and len(labels[b]) != len(r):
            raise ValueError(f"response {b} has {len(r)} tokens but {len(labels[b])} labels")
    # One tensor from padded Python lists, masks from lengths: a per-row loop of small tensor copies cost
    # 2.8 ms per 32-row batch, a tenth of a training step of the tiny RM.
    input_ids = torch.tensor([[*p, *r] + [pad_id] * (L - n) for p, r, n in zip(prompt_ids, response_ids, lengths)],
                             dtype=torch.long)
    positions = torch.arange(L)  # (L,)
    end = torch.tensor(lengths)[:, None]  # (B, 1)
    start = torch.tensor([len(p) for p in prompt_ids])[:, None]  # (B, 1)
    attention_mask = (positions < end).long()  # (B, L)
    response_mask = ((positions >= start) & (positions < end)).long()  # (B, L)
    if labels is None:
        label_tensor = torch.zeros(B, L, dtype=torch.long)
    else:
        label_tensor = torch.tensor([[0] * len(p) + list(lab) + [0] * (L - n)
                                     for p, lab, n in zip(prompt_ids, labels, lengths)], dtype=torch.long)
    last_index = torch.tensor(lengths) - 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, response_mask=response_mask,
                labels=label_tensor, last_index=last_index)


def head_values(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """h_t at every position: (B, L) -> (B, L). Right padding, so default position ids are right."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float()


def scores_from_head(h: torch.Tensor, response_mask: torch.Tensor, last_index: torch.Tensor,
                     level: str, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token_rewards, prefix_scores, sequence_score) on the full (B, L) grid from head values h (B, L)."""
    m = response_mask.to(h.dtype)
    if level == "token":
        return h * m, prefix_means(h, response_mask), masked_mean(h, m, dim=-1)
    score = gather_last(h, last_index)  # (B,)
    at_last = at_last_index(score, last_index, h.shape[1])  # (B, L)
    # An encoder's h_t sees the whole text, so it is no prefix score: only the final one is known.
    prefix = h * m if causal else at_last
    return at_last, prefix, score


class RewardModel(torch.nn.Module):
    """A backbone with a scalar head, its tokenizer and what it is (`info`)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: RewardModelInfo, bf16: bool = False):
        super().__init__()
        self.model, self.tokenizer, self.info = model, tokenizer, info
        self.bf16 = bf16  # score under bf16 autocast (fp32 weights, bf16 matmuls, fp32 head values out)
        self._same_vocab: dict[int, bool] = {}

    @property
    def level(self) -> str:
        return self.info.level

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_length(self) -> int:
        """Positions the backbone has (prompt + response); a longer input would index past its table."""
        config = self.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9

    def fits(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> bool:
        return len(prompt_ids) + len(response_ids) <= self.max_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return head_values(self.model, input_ids, attention_mask)

    # -- tokens ----------------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt ids; an encoder's [CLS] goes first, as in its pre-training."""
        ids = encode_prompt(self.tokenizer, prompt)
        cls = self.tokenizer.cls_token_id
        return [cls] + ids if self.info.backbone_kind == "encoder" and cls is not None else ids

    def encode_response(self, response: str, add_eos: bool = True) -> list[int]:
        return encode_response(self.tokenizer, response, add_eos)

    # -- scoring ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def score_ids(self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                  micro_batch: int = 32, advance: Callable[[int], None] | None = None) -> RewardOutput:
        """Score responses given in the RM's own token ids. Returns CPU tensors."""
        for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            if not self.fits(p, r):
                raise InputError(f"input {i + 1} is {len(p) + len(r)} tokens (prompt + response), but the reward "
                                 f"model reads at most {self.max_length}: shorten it", field="response")
        was_training = self.model.training
        self.model.eval()
        T = max(len(r) for r in response_ids)
        token_rewards, prefix_scores = torch.zeros(len(response_ids), T), torch.zeros(len(response_ids), T)
        sequence_score = torch.zeros(len(response_ids))
        causal = self.info.backbone_kind == "causal"
        for start in range(0, len(response_ids), micro_batch):
            p, r = prompt_ids[start: start + micro_batch], response_ids[start: start + micro_batch]
            batch = pad_batch(p, r, self.tokenizer.pad_token_id)
            h = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)).cpu()
            tok, pre, seq = scores_from_head(h, batch["response_mask"], batch["last_index"], self.level, causal)
            sequence_score[start: start + len(r)] = seq
            for i, (pi, ri) in enumerate(zip(p, r)):  # cut each response out of the (B, L) grid
                token_rewards[start + i, : len(ri)] = tok[i, len(pi): len(pi) + len(ri)]
                prefix_scores[start + i, : len(ri)] = pre[i, len(pi): len(pi) + len(ri)]
            if advance is not None:
                advance(len(r))
        self.model.train(was_training)
        return RewardOutput(token_rewards, prefix_scores, sequence_score)

    def score_texts(self, prompts: Sequence[str], responses: Sequence[str], micro_batch: int = 32,
                    advance: Callable[[int], None] | None = None) -> RewardOutput:
        """Score text responses (EOS appended) on the RM's own tokens. Returns CPU tensors."""
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        response_ids = [self.encode_response(r) for r in responses]
        return self.score_ids(prompt_ids, response_ids, micro_batch, advance)

    def score_responses(self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                        tokenizer: Any, micro_batch: int = 32, prompts: Sequence[str] | None = None) -> RewardOutput:
        """Score the caller's (policy's) responses, rewards placed on the caller's response tokens.

        `response_ids` include the final EOS if one was generated. Tensors come back on the CPU (the model
        itself may run on CUDA); T = the longest response, right-padded with 0.

        Same vocabulary as the RM: scored as given. Different vocabulary: prompt and response are decoded
        to text and scored with the RM's tokens (the RM's EOS is appended iff the caller's response ends
        with the caller's EOS); then each RM token's reward goes, whole, to the caller token holding its
        last character, so a caller token's reward is the SUM of the rewards of the RM tokens ending in it
        and each response's total reward is preserved; the RM's EOS reward goes to the caller's last
        token. Prefix scores S_t are the RM's prefix score after the last RM token so placed at or before
        t (so S at the caller's last token is the RM's final score). `sequence_score` is the RM's own
        (mean over its tokens for a token RM).

        `prompts`: the prompts' texts as the task or dataset gave them. With a different vocabulary the RM
        encodes these (through its own chat template, if any) rather than the caller's decoded prompt ids, which
        hold the policy's chat template as text ("system\nYou are ...user\n...") the RM never saw in training.
        """
        if self._shares_vocab(tokenizer):
            return self.score_ids(prompt_ids, response_ids, micro_batch)
        texts, rm_prompts, rm_responses, rm_ends, rm_zero = [], [], [], [], []
        for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            prompt = prompts[i] if prompts is not None else tokenizer.decode(list(p), skip_special_tokens=True)
            has_eos = len(r) > 0 and r[-1] == tokenizer.eos_token_id
            text = tokenizer.decode(list(r), skip_special_tokens=True)
            ids, spans = token_spans(self.tokenizer, text)
            n_text, ends = len(ids), [e for _, e in spans]
            if has_eos or not ids:  # an empty text still needs one token to score
                ids, ends = ids + [self.tokenizer.eos_token_id], ends + [len(text)]
            texts.append(text)
            rm_prompts.append(self.encode_prompt(prompt))
            rm_responses.append(ids)
            rm_ends.append(ends)
            rm_zero.append([i == n_text for i in range(len(ids))])
        rm_out = self.score_ids(rm_prompts, rm_responses, micro_batch)
        T = max(len(r) for r in response_ids)
        token_rewards, prefix_scores = torch.zeros(len(response_ids), T), torch.zeros(len(response_ids), T)
        for b, r in enumerate(response_ids):
            owners = projection.owner_index(rm_ends[b], rm_zero[b], projection.char_ends(tokenizer, r))
            n_rm = len(rm_responses[b])
            token_rewards[b, : len(r)] = projection.project_sum(rm_out.token_rewards[b, :n_rm], owners, len(r))
            prefix_scores[b, : len(r)] = projection.project_prefix(rm_out.prefix_scores[b, :n_rm], owners, len(r))
        return RewardOutput(token_rewards, prefix_scores, rm_out.sequence_score)

    def _shares_vocab(self, tokenizer: Any) -> bool:
        if tokenizer is self.tokenizer:
            return True
        key = id(tokenizer)
        if key not in self._same_vocab:
            self._same_vocab[key] = tokenizer.get_vocab() == self.tokenizer.get_vocab()
        return self._same_vocab[key]

    # -- files -----------------------------------------------------------------------------------------
    def save(self, out: str | Path, state_dict: dict | None = None) -> None:
        """save_pretrained (safetensors) + tokenizer + `fgalign_rm.json`, into an existing/new directory.
        `state_dict`: the full weights gathered after a sharded run (default: the model's own)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
        self.tokenizer.save_pretrained(out)
        write_json(out / RM_META_FILE, asdict(self.info))


def use_fused_gelu(config: Any) -> None:
    """GPT-2's `gelu_new` is the tanh-approximate GELU written as 7 Python-level tensor ops; `gelu_pytorch_tanh`
    is the same function in one fused kernel (equal up to float rounding). Measured on the tiny default RM:
    a training step 1.27x faster on CPU."""
    if getattr(config, "activation_function", None) == "gelu_new":
        config.activation_function = "gelu_pytorch_tanh"


def build_reward_model(backbone: str | Path, level: str, loss: str, anchor: float = 0.0, pairs: str = "edit",
                       label_mode: str = "tokens", backbone_kind: str = "auto") -> RewardModel:
    """A fresh RM: the backbone's weights from a local HF directory and a zero-initialised scalar head.

    The head starts at 0 so every token starts with reward 0 — the anchored value for kept tokens.
    """
    from transformers import AutoModelForTokenClassification

    source = resolve_model(backbone, option="--model")
    config = load_config(source)
    kind = detect_backbone_kind(config) if backbone_kind == "auto" else backbone_kind
    tokenizer = load_rm_tokenizer(source)
    # No dropout in front of the head: it would make r_t noisy for a 1-unit output.
    config.num_labels, config.classifier_dropout = 1, 0.0
    use_fused_gelu(config)
    # fp32: it is trained (a bf16-saved backbone would otherwise train in bf16, with no fp32 master weights).
    model = fuse_gelu(load_pretrained(AutoModelForTokenClassification, source, config=config, dtype=torch.float32))
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # a pad token was added
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    head = head_module(model)
    torch.nn.init.zeros_(head.weight)
    if head.bias is not None:
        torch.nn.init.zeros_(head.bias)
    info = RewardModelInfo(level=level, backbone_kind=kind, loss=loss, anchor=anchor, pairs=pairs,
                           label_mode=label_mode, backbone=str(backbone))
    return RewardModel(model, tokenizer, info)


def load_reward_model(path: str | Path, device: str | torch.device = "cpu", bf16: bool = False) -> RewardModel:
    """Load an RM saved by `fgalign train-rm` (safetensors only); `bf16`: score under bf16 autocast, refused
    where the device has no native bf16 (`models/precision.py`)."""
    from transformers import AutoModelForTokenClassification

    path = check_model_dir(path, "reward model", "--rm")
    meta = path / RM_META_FILE
    if not meta.exists():
        raise InputError(f"no {RM_META_FILE}: not a reward model saved by `fgalign train-rm`", path=str(path))
    info = RewardModelInfo(**json.loads(meta.read_text()))
    model = fuse_gelu(AutoModelForTokenClassification.from_pretrained(str(path), use_safetensors=True))
    device = resolve_device(device) if isinstance(device, str) else device
    check_bf16(bf16, device, "--rm-bf16")
    rm = RewardModel(model.to(device).eval(), load_rm_tokenizer(path), info, bf16=bf16)
    return rm

"""Causal LMs: build a tiny one from a config, or load any local Hugging Face directory.

Everything loads with safetensors and never with `trust_remote_code` unless the user asks for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fgalign.data.tokenize import check_tokenizer
from fgalign.errors import InputError
from fgalign.models.activations import fuse_gelu


@dataclass
class TinyModelConfig:
    """Shape of a tiny causal LM built from scratch (no hub needed)."""

    family: str = "gpt2"
    """Architecture family: "gpt2" or "llama"."""
    n_layer: int = 2
    """Transformer blocks."""
    d_model: int = 128
    """Hidden size."""
    n_head: int = 4
    """Attention heads."""
    max_len: int = 128
    """Maximum sequence length (prompt + response)."""
    dropout: float = 0.0
    """Dropout in attention/MLP/embeddings; 0 keeps PPO log-probs deterministic."""


def check_tiny_config(cfg: TinyModelConfig, prefix: str = "--tiny.") -> None:
    """Shapes the model constructors would reject with a traceback (or accept and then crash on)."""
    for name in ("n_layer", "d_model", "n_head", "max_len"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"expected an integer >= 1, got {value!r}", field=prefix + name.replace("_", "-"))
    if cfg.d_model % cfg.n_head:
        raise InputError(f"d-model {cfg.d_model} is not divisible by n-head {cfg.n_head} (each head gets "
                         "d-model / n-head dimensions)", field=f"{prefix}d-model")
    if cfg.max_len < 8:
        raise InputError(f"expected at least 8 positions, got {cfg.max_len}", field=f"{prefix}max-len")
    if not 0 <= cfg.dropout < 1:
        raise InputError(f"expected a probability in [0, 1), got {cfg.dropout!r}", field=f"{prefix}dropout")


def build_tiny_causal_lm(cfg: TinyModelConfig, tokenizer: Any) -> torch.nn.Module:
    """A randomly initialised causal LM sized by `cfg`, with the tokenizer's special ids set."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    vocab = len(tokenizer)
    specials = dict(bos_token_id=tokenizer.bos_token_id or tokenizer.eos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if cfg.family == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_layer,
                            n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                            attn_pdrop=cfg.dropout, **specials)
    elif cfg.family == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=cfg.d_model, intermediate_size=4 * cfg.d_model,
                             num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                             num_key_value_heads=cfg.n_head, max_position_embeddings=cfg.max_len,
                             attention_dropout=cfg.dropout, tie_word_embeddings=True, **specials)
    else:
        raise InputError(f"unknown model family '{cfg.family}': expected 'gpt2' or 'llama'", field="family")
    return fuse_gelu(AutoModelForCausalLM.from_config(config))


def hub_allowed() -> bool:
    """fgalign is offline unless asked (`fgalign --allow-hub ...` or HF_HUB_OFFLINE=0; see fgalign/__init__)."""
    import os

    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() in ("0", "false", "no", "off")


def check_model_dir(path: str | Path, what: str = "model", option: str | None = None, weights: bool = True) -> Path:
    """A local Hugging Face folder with config.json and safetensors weights; refused before anything loads.

    `pytorch_model.bin` is refused here, by name, and never unpickled (a pickle can run code). With the hub
    allowed, a name that is not a local path is passed on to transformers as a hub id.
    """
    p = Path(path)
    if not p.exists():
        if hub_allowed():
            return p
        raise InputError(f"no such local directory (fgalign loads {what}s from local folders; the Hugging Face hub "
                         "is off: `fgalign --allow-hub ...` lets transformers fetch a hub id)",
                         path=str(p), field=option)
    if not p.is_dir():
        raise InputError(f"expected a {what} directory (a Hugging Face save_pretrained folder), got a file",
                         path=str(p), field=option)
    if weights and not (p / "config.json").exists():
        raise InputError(f"no config.json: not a Hugging Face {what} directory", path=str(p), field=option)
    if weights and not any(p.glob("*.safetensors")) and not any(p.glob("*.safetensors.index.json")):
        pickles = sorted(q.name for q in p.glob("*.bin"))
        hint = (f"it holds only {', '.join(pickles)} (a pickle, not loaded): convert it once with "
                "`python -c \"from transformers import AutoModel as A; A.from_pretrained('DIR', use_safetensors=False)"
                ".save_pretrained('DIR_st')\"` (only for a file you trust)") if pickles else "it holds no weights"
        raise InputError(f"safetensors weights are required; {hint}", path=str(p), field=option)
    return p


def _check_dir(path: str | Path, what: str) -> Path:
    return check_model_dir(path, what)


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """A fast tokenizer from a local directory, with a pad token distinct from EOS."""
    from transformers import AutoTokenizer

    check_model_dir(path, "tokenizer", weights=False)
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - a broken user directory
        raise InputError(f"cannot load a tokenizer: {e}", path=str(path)) from None
    check_tokenizer(tok)
    tok.padding_side = "left"
    return tok


def load_causal_lm(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                   trust_remote_code: bool = False) -> torch.nn.Module:
    """A causal LM from a local directory (safetensors only)."""
    from transformers import AutoModelForCausalLM

    p = _check_dir(path, "model")
    model = AutoModelForCausalLM.from_pretrained(str(p), use_safetensors=True, dtype=dtype,
                                                 trust_remote_code=trust_remote_code)
    return fuse_gelu(model).to(device)


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)

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
from fgalign.models.sources import load_pretrained, resolve_model, tokenizer_kwargs


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


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """A fast tokenizer from a local directory or GGUF file (`models/sources.py`), with a pad distinct from EOS."""
    from transformers import AutoTokenizer

    source = resolve_model(path, "tokenizer", weights=False)
    try:
        tok = AutoTokenizer.from_pretrained(str(source.directory), trust_remote_code=trust_remote_code,
                                            **tokenizer_kwargs(source))
    except Exception as e:  # noqa: BLE001 - a broken user directory
        raise InputError(f"cannot load a tokenizer: {e}", path=str(path)) from None
    check_tokenizer(tok)
    tok.padding_side = "left"
    return tok


def load_causal_lm(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
                   trust_remote_code: bool = False) -> torch.nn.Module:
    """A causal LM from a local directory (safetensors only) or a GGUF file (dequantized), in fp32 unless `dtype`
    says otherwise.

    fp32 by default because transformers >= 5 otherwise keeps the checkpoint's dtype: a bf16-saved policy would
    be trained in bf16 with no fp32 master weights (mixed precision autocasts fp32 weights instead), and would
    not match its fp32 value model or reference. `dtype="auto"`: the checkpoint's dtype (inference only)."""
    from transformers import AutoModelForCausalLM

    source = resolve_model(path, "model")
    model = load_pretrained(AutoModelForCausalLM, source, dtype=dtype, trust_remote_code=trust_remote_code)
    return fuse_gelu(model).to(device)


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)

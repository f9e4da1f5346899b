"""The models and prompts both sides of benchmarks/ppo_vs_trl.py run on: a tiny random GPT-2 (with its RM) or a
real model converted once into a cache (with an untrained sequence RM on the same backbone), and the default
task's prompts through the model's chat template. benchmarks/mfu.py and scaling.py build their models here too."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ppo_vs_trl_trl import trl_pad_token


def build_models(d: Path, n_prompts: int, n_layer: int = 2, d_model: int = 128) -> list[list[int]]:
    """Tiny mode: tokenizer, policy and sequence RM shared by both sides; returns the tokenized prompts."""
    import torch

    from fgalign.data.tokenize import encode_prompt
    from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm, load_tokenizer
    from fgalign.models.reward import build_reward_model
    from fgalign.tasks.base import load_task

    task = load_task("default")
    tok = load_tokenizer(task.tokenizer(d / "tok"))
    torch.manual_seed(0)
    policy = build_tiny_causal_lm(TinyModelConfig(n_layer=n_layer, d_model=d_model, n_head=4, max_len=256), tok)
    policy.save_pretrained(d / "policy")
    tok.save_pretrained(d / "policy")
    build_reward_model(d / "policy", level="sequence", loss="bt").save(d / "rm")
    return [encode_prompt(tok, p) for p in task.prompts("train", n_prompts, 0)]


def cache_dir(model: str, cache: Path) -> Path:
    """Where a real model's converted folder and RM go: one folder per model spec."""
    name = Path(model.rstrip("/")).name or "model"
    if Path(model).is_dir():  # a folder: keyed by its full path too, two folders named alike do not collide
        name += "-" + re.sub(r"[^A-Za-z0-9]+", "_", str(Path(model).resolve()))[-48:]
    return cache / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def prepare_real_model(model: str, cache: Path) -> tuple[Path, Path]:
    """(policy folder, fgalign sequence-RM folder): converted / built once into the cache."""
    from fgalign.models.sources import resolve_model

    source = resolve_model(model, option="--model")
    where = cache_dir(model, cache)
    policy = source.directory if not source.is_gguf else where / "model"
    if source.is_gguf and not (policy / "config.json").exists():
        where.mkdir(parents=True, exist_ok=True)
        print(f"converting {model} -> {policy} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "fgalign.cli", "convert", "--model", model, "--out", str(policy)],
                       check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    rm = where / "rm-seq"
    if not (rm / "fgalign_rm.json").exists() or not shares_vocab(policy, rm):
        from fgalign.models.reward import build_reward_model

        print(f"building an untrained sequence RM on {policy} -> {rm} (once) ...", flush=True)
        tmp = where / f".rm-seq.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build_reward_model(policy, level="sequence", loss="bt").save(tmp)
        shutil.rmtree(rm, ignore_errors=True)
        tmp.rename(rm)
    return policy, rm


def shares_vocab(policy: Path, rm: Path) -> bool:
    """Whether fgalign scores the policy's ids with this RM as they are (no text round trip): an RM built by an
    fgalign whose pad rule differed (e.g. an added <|pad|>) is rebuilt."""
    from fgalign.models.policy import load_tokenizer
    from fgalign.models.reward import load_rm_tokenizer

    return load_tokenizer(policy).get_vocab() == load_rm_tokenizer(rm).get_vocab()


def chat_prompts(policy: Path, n: int) -> tuple[list[str], list[str], list[list[int]], str | None]:
    """The default task's train prompts through the chat template, tokenized by plain transformers:
    (raw texts, rendered texts, ids, TRL's pad token or None when the tokenizer's pad is not EOS)."""
    from transformers import AutoTokenizer

    from fgalign.tasks.base import load_task

    tok = AutoTokenizer.from_pretrained(str(policy))
    if tok.chat_template is None:
        raise SystemExit(f"{policy}: the tokenizer has no chat template")
    raw = load_task("default").prompts("train", n, 0)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in raw]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    return raw, texts, ids, trl_pad_token(tok, ids)

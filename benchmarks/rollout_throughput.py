"""Rollout throughput, side by side: fgalign's HF sampler (`generate`) vs the vLLM sampler, same model and batch.

    python benchmarks/rollout_throughput.py --model RUN/sft [--batch 64] [--max-new-tokens 128] [--rounds 3]

Needs a CUDA GPU and vLLM (`fgalign[vllm]`). Both samplers get the same prompts (the task's train split,
encoded by the model's tokenizer), temperature 1, no top-k/top-p; each round times one batch per sampler
(after a warm-up batch each), counting generated response tokens (EOS included, padding not). Prints JSON:
tokens/s per sampler (best round) and the ratio. PREPARED, NOT YET RUN: no GPU was available where it was
written.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from fgalign.data.tokenize import encode_prompt
from fgalign.models.policy import load_causal_lm, load_tokenizer
from fgalign.sampling.hf import generate
from fgalign.sampling.rollout import SamplingConfig
from fgalign.sampling.vllm import VllmSampler, vllm_problem
from fgalign.tasks import load_task


def timed(fn) -> tuple[float, int]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    rollout = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, int(rollout.response_mask.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a local HF causal-LM directory (e.g. RUN/sft)")
    ap.add_argument("--task", default="default")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if (problem := vllm_problem()) is not None:
        raise SystemExit(f"error: {problem}")
    tokenizer = load_tokenizer(args.model)
    prompts = [encode_prompt(tokenizer, p) for p in load_task(args.task).prompts("train", args.batch, 0)]
    settings = SamplingConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model = load_causal_lm(args.model).cuda().eval()
    vllm = VllmSampler(args.model, seed=0)
    samplers = {"hf_generate": lambda: generate(model, prompts, eos, pad, settings, micro_batch=args.batch),
                "vllm": lambda: vllm.generate(prompts, eos, pad, settings)}
    best = {name: 0.0 for name in samplers}
    for name, fn in samplers.items():
        timed(fn)  # warm-up: kernels, CUDA graphs, caches
    for _ in range(args.rounds):
        for name, fn in samplers.items():  # alternate, so both see the same machine state
            seconds, tokens = timed(fn)
            best[name] = max(best[name], tokens / seconds)
    print(json.dumps({"model": args.model, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
                      "tokens_per_s": best, "vllm_over_hf": best["vllm"] / best["hf_generate"]}, indent=2))


if __name__ == "__main__":
    main()

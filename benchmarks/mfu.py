"""How far fgalign's two training steps are from the hardware: an MFU proxy on the CPU.

    .venv/bin/python benchmarks/mfu.py [--threads 2 --layers 6 --d-model 384]

For one reward-model training step (`fgalign train-rm`, sequence RM, 16 pairs = 32 rows, through the HF
Trainer, everything included) and one PPO minibatch step (`ppo_update`: policy and value forward + backward,
gradient clipping, two AdamW steps; 16 rows) on a GPT-2 of 6 layers x 384 d (vocab 512, the default world):

    achieved FLOP/s = analytic FLOPs of the step / measured seconds per step
    matmul FLOP/s   = the same step's matrix products (every GEMM of forward and backward at the step's
                      shapes, attention's batched products included), timed alone in a loop, same threads
    MFU proxy       = achieved / matmul

The analytic count is the usual one: 6 FLOPs per parameter per token for the 12·d² weights of each block
(2 forward, 4 backward), plus attention's QKᵀ and AV (4·L·d per token per layer forward, x3 with backward),
plus the LM head on the positions that get logits (PPO policy). Tokens are the padded tokens the model really
runs on (the shapes the matmul loop uses); the share of them that is real text is printed too. Embedding
look-ups, layer norms, softmax, GELU and the optimizer count as zero FLOPs: they are the overhead measured.

Prints both proxies; the last line is the RM step's: `ratio: X.XX`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def block_flops(tokens: int, rows: int, length: int, n_layer: int, d: int) -> float:
    """Forward + backward FLOPs of the transformer blocks on `rows` sequences of `length` (padded) tokens."""
    dense = 6 * 12 * d * d * tokens * n_layer  # qkv 3d², proj d², MLP 8d²; x2 forward, x4 backward
    attention = 3 * 4 * length * length * d * rows * n_layer  # QKᵀ and AV: 2·L²·d each forward; x3
    return dense + attention


def gemm_shapes(rows: int, length: int, n_layer: int, d: int, n_head: int, head_rows: int = 0,
                vocab: int = 0) -> list[tuple]:
    """Every matrix product of one forward + backward: ("mm", m, k, n) or ("bmm", b, m, k, n)."""
    n, dh, b = rows * length, d // n_head, rows * n_head
    shapes = []
    for _ in range(n_layer):
        for k, m_out in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)):
            shapes += [("mm", n, k, m_out), ("mm", n, m_out, k), ("mm", k, n, m_out)]  # y, dX, dW
        # QKᵀ, AV forward; each has two backward products of the same size
        shapes += [("bmm", b, length, dh, length), ("bmm", b, length, length, dh)] * 3
    if head_rows:
        shapes += [("mm", head_rows, d, vocab), ("mm", head_rows, vocab, d), ("mm", d, head_rows, vocab)]
    return shapes


def shape_flops(shapes: list[tuple]) -> float:
    return sum(2 * s[1] * s[2] * s[3] if s[0] == "mm" else 2 * s[1] * s[2] * s[3] * s[4] for s in shapes)


def matmul_rate(shapes: list[tuple], seconds: float = 2.0) -> float:
    """FLOP/s of a loop of exactly these products on preallocated tensors (the hardware's reach here)."""
    import torch

    ops = []
    for s in shapes:
        if s[0] == "mm":
            a, bb = torch.randn(s[1], s[2]), torch.randn(s[2], s[3])
            ops.append((torch.mm, a, bb, torch.empty(s[1], s[3])))
        else:
            a, bb = torch.randn(s[1], s[2], s[3]), torch.randn(s[1], s[3], s[4])
            ops.append((torch.bmm, a, bb, torch.empty(s[1], s[2], s[4])))
    for f, a, bb, out in ops:  # warm-up
        f(a, bb, out=out)
    flops, reps, t0 = shape_flops(shapes), 0, time.perf_counter()
    times = []
    while time.perf_counter() - t0 < seconds or reps < 3:
        t = time.perf_counter()
        for f, a, bb, out in ops:
            f(a, bb, out=out)
        times.append(time.perf_counter() - t)
        reps += 1
    return flops / statistics.median(times)


def rm_step(work: Path, steps: int, n_layer: int, d: int, threads: int) -> dict:
    """Seconds per `fgalign train-rm` step (Trainer's train_runtime / steps) and the batch shapes it ran."""
    import fgalign.train.reward as R
    from rm_throughput import prepare

    if not (work / "pairs.jsonl").exists():
        prepare(work, 512, n_layer, d)
    shapes: list[tuple[int, int, int]] = []
    original_call = R.PairCollator.__call__

    def recording(self, features):
        batch = original_call(self, features)
        shapes.append((*batch["input_ids"].shape, int(batch["attention_mask"].sum())))
        return batch

    R.PairCollator.__call__ = recording
    cfg = R.RewardConfig(data=str(work / "pairs.jsonl"), out=str(work / "out"), model=str(work / "model"),
                         level="sequence", pairs="preference", max_steps=steps, batch_size=16, device="cpu",
                         max_length=128, save_steps=0, logging_steps=10**6, overwrite=True)
    R.run(cfg)
    R.PairCollator.__call__ = original_call
    runtime = float(json.loads((work / "out" / "fgalign_config.json").read_text())["train"]["train_runtime"])
    return {"seconds": runtime / steps, "shapes": shapes[:steps]}


def ppo_step(work: Path, n_layer: int, d: int, threads: int) -> dict:
    """Seconds per PPO minibatch step (median over two timed `ppo_update`s of 16 steps) and its shapes."""
    import torch

    from fgalign.models.policy import load_tokenizer
    from fgalign.models.reward import load_reward_model
    from fgalign.rl.trainer import PPOConfig, _build_models
    from fgalign.rl.update import make_experience, ppo_update
    from fgalign.sampling.hf import generate
    from fgalign.sampling.rollout import SamplingConfig
    from ppo_bench_models import build_models

    prompts = build_models(work, 64, n_layer, d)
    cfg = PPOConfig(policy=str(work / "policy"), rm=str(work / "rm"), out=str(work / "ppo"), reward="sequence",
                    kl_target=None, batch_size=64, max_new_tokens=24)
    tok = load_tokenizer(cfg.policy)
    policy, ref, value = _build_models(cfg, tok)
    rm = load_reward_model(cfg.rm)
    torch.manual_seed(0)
    rollout = generate(policy, prompts, tok.eos_token_id, tok.eos_token_id, SamplingConfig(max_new_tokens=24), 64)
    scores = rm.score_responses(rollout.prompt_lists(), rollout.response_lists(), tok)
    exp = make_experience(rollout, scores, policy, ref, value, 0.1, cfg, cfg.gamma, cfg.lam, True, 1.0, 64)
    optimizers = tuple(torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True) for m in (policy, value))
    ppo_update(exp, policy, value, optimizers, cfg)  # warm-up
    per_step = []
    for _ in range(2):
        t = time.perf_counter()
        ppo_update(exp, policy, value, optimizers, cfg)
        per_step.append((time.perf_counter() - t) / (cfg.ppo_epochs * cfg.minibatches))
    rows = 64 // cfg.minibatches
    length = rollout.input_ids.shape[1]
    real = float(rollout.attention_mask.float().mean())
    return {"seconds": statistics.median(per_step), "rows": rows, "length": length, "T": rollout.response_ids.shape[1],
            "real_share": real, "vocab": policy.get_input_embeddings().num_embeddings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--heads", type=int, default=4, help="attention heads (the benchmarks' tiny models use 4)")
    ap.add_argument("--rm-steps", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    L, d, H = args.layers, args.d_model, args.heads
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {args.threads} thread(s), {L}L{d}d")
    with tempfile.TemporaryDirectory() as tmp:
        rm = rm_step(Path(tmp) / "rm", args.rm_steps, L, d, args.threads)
        ppo = ppo_step(Path(tmp) / "ppo", L, d, args.threads)

    # RM: every step's own shapes for the FLOPs; the median step's shape for the matmul loop.
    rm_flops = statistics.mean(block_flops(r * n, r, n, L, d) for r, n, _ in rm["shapes"])
    rows, length = sorted(((r, n) for r, n, _ in rm["shapes"]), key=lambda s: s[1])[len(rm["shapes"]) // 2]
    rm_rate = matmul_rate(gemm_shapes(rows, length, L, d, H))
    rm_real = sum(real for _, _, real in rm["shapes"]) / sum(r * n for r, n, _ in rm["shapes"])
    rm_achieved = rm_flops / rm["seconds"]

    # PPO: policy (blocks + LM head on T+1 positions per row) and value (blocks) on the same (rows, length).
    r, n, V = ppo["rows"], ppo["length"], ppo["vocab"]
    head = r * (ppo["T"] + 1)
    ppo_flops = 2 * block_flops(r * n, r, n, L, d) + 6 * head * d * V
    ppo_shapes = gemm_shapes(r, n, L, d, H, head, V) + gemm_shapes(r, n, L, d, H)
    ppo_rate = matmul_rate(ppo_shapes)
    ppo_achieved = ppo_flops / ppo["seconds"]

    print(f"\nRM training step (32 rows, median {length} padded tokens/row, {rm_real:.0%} real): "
          f"{rm['seconds'] * 1e3:.0f} ms, {rm_flops / 1e9:.1f} GFLOP -> {rm_achieved / 1e9:.1f} GFLOP/s; "
          f"matmul loop {rm_rate / 1e9:.1f} GFLOP/s; MFU proxy {rm_achieved / rm_rate:.2f}")
    print(f"PPO minibatch step ({r} rows x {n} tokens, {ppo['real_share']:.0%} real, policy + value): "
          f"{ppo['seconds'] * 1e3:.0f} ms, {ppo_flops / 1e9:.1f} GFLOP -> {ppo_achieved / 1e9:.1f} GFLOP/s; "
          f"matmul loop {ppo_rate / 1e9:.1f} GFLOP/s; MFU proxy {ppo_achieved / ppo_rate:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"ppo_ratio: {ppo_achieved / ppo_rate:.2f}")
    print(f"ratio: {rm_achieved / rm_rate:.2f}")


if __name__ == "__main__":
    main()

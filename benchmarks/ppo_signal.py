"""How much of one PPO update is signal? In-batch fit against the gain on fresh prompts.

From the SFT policy, with the task's oracle as the reward (`--rm task`, so the reward is right by construction):
sample a batch, run one PPO update (the trainer's own `make_experience` and `ppo_update`), then measure
- in the batch: the correlation between each answer's change in log-probability and its oracle score (does the
  update move the batch's own answers the right way?), and the KL the update spent on the batch;
- on fresh prompts: the oracle score of new samples before and after the update, and their KL to the SFT policy
  (does the move carry over to prompts the update did not see?).
Repeated over seeds for each batch size.

  python benchmarks/ppo_signal.py --policy runs/rm19/sft --batch 64 256 --seeds 3
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch


def one_update(policy_dir: str, batch: int, seed: int, fresh: int, reward: str, epochs: int) -> dict:
    from fgalign.models.policy import load_causal_lm, load_tokenizer
    from fgalign.models.value import ValueModel
    from fgalign.rl.oracle_reward import TaskRewardModel
    from fgalign.rl.scoring import policy_logprobs
    from fgalign.rl.trainer import PPOConfig
    from fgalign.rl.update import make_experience, ppo_update
    from fgalign.sampling.hf import generate
    from fgalign.sampling.rollout import SamplingConfig
    from fgalign.tasks import load_task

    torch.manual_seed(seed)
    cfg = PPOConfig(policy=policy_dir, rm="task", out="unused", reward=reward, ppo_epochs=epochs)
    tok, task = load_tokenizer(policy_dir), load_task("default")
    policy, ref = load_causal_lm(policy_dir), load_causal_lm(policy_dir).eval()
    value = ValueModel.from_backbone_dir(policy_dir, len(tok))
    rm, sampling = TaskRewardModel(task), SamplingConfig(max_new_tokens=24)

    def rollout(prompts):
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        with torch.no_grad():
            return generate(policy.eval(), ids, tok.eos_token_id, tok.pad_token_id, sampling, 256)

    def score_and_kl(prompts):
        torch.manual_seed(10_000 + seed)  # the same random numbers before and after: a paired comparison
        ro = rollout(prompts)
        scores = rm.score_responses(ro.prompt_lists(), ro.response_lists(), tok).sequence_score
        with torch.no_grad():
            kl = (policy_logprobs(policy, ro)[0] - policy_logprobs(ref, ro)[0]).sum(1)
        return float(scores.mean()), float(kl.mean())

    train = task.prompts("train", batch, seed)
    test = task.prompts("valid", fresh, 10_000 + seed)
    before, _ = score_and_kl(test)
    torch.manual_seed(seed)
    ro = rollout(train)
    out = rm.score_responses(ro.prompt_lists(), ro.response_lists(), tok)
    exp = make_experience(ro, out, policy, ref, value, beta=0.0, rs=cfg, gamma=cfg.gamma, lam=cfg.lam,
                          whiten_advantages=True, temperature=1.0, micro_batch=256)
    optimizers = [torch.optim.AdamW(policy.parameters(), lr=cfg.lr), torch.optim.AdamW(value.parameters(), lr=cfg.value_lr)]
    ppo_update(exp, policy, value, optimizers, cfg)
    with torch.no_grad():
        new = policy_logprobs(policy.eval(), ro)[0].sum(1)
    moved = new - exp.logprobs.sum(1)  # (B,): change in log-probability of each sampled answer
    corr = float(torch.corrcoef(torch.stack([moved, out.sequence_score]))[0, 1])
    after, kl_fresh = score_and_kl(test)
    return {"in_batch_corr": corr, "in_batch_kl_old_new": float(-(moved.mean())), "fresh_gain": after - before,
            "fresh_kl": kl_fresh}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fresh", type=int, default=512, help="fresh valid-split prompts for the before/after score")
    ap.add_argument("--reward", default="token", choices=["token", "sequence"])
    ap.add_argument("--epochs", type=int, default=4, help="PPO passes over the batch (4 minibatches each)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; oracle reward '{args.reward}', one PPO update ({args.epochs} epochs x 4 "
          "minibatches, lr 1e-4) from the SFT policy")
    for batch in args.batch:
        rows = [one_update(args.policy, batch, seed, args.fresh, args.reward, args.epochs) for seed in range(args.seeds)]
        line = ", ".join(f"{k} {statistics.mean(r[k] for r in rows):+.3f} (sd {statistics.pstdev(r[k] for r in rows):.3f})"
                         for k in rows[0])
        print(f"batch {batch}: {line}")


if __name__ == "__main__":
    main()

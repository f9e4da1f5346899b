"""Does a reward model count? Score N correct items against N−1 and N+1 on the default world's test prompts.

The wrong-count mistake is the one no token RM has learnt to see (issue 19). A missing item is marked on the
token where it belongs (the final period) and an extra one on its own tokens, so a token RM can only see
either by comparing the number of items with the N in the prompt. This builds, for each test prompt, a
mistake-free answer of N distinct allowed items, the same answer without its last item, and with one more, and
reports per kind the mean token sum, the mean reward on the period and on the end token, and the AUC of
"complete" against each wrong count (by token sum and by the RM's sequence score).

  python benchmarks/rm_count_probe.py runs/rm19/backbones/smollm2/rm-token-3500 [--prompts 200]
"""
from __future__ import annotations

import argparse
import random

import torch

from fgalign.eval.rm_eval import auc
from fgalign.models.reward import load_reward_model
from fgalign.tasks.lists import ListAnswer, ListWorld, parse_prompt


def probe(rm_dir: str, prompts: int, seed: int) -> dict:
    rm, world, rng = load_reward_model(rm_dir), ListWorld(), random.Random(seed)
    cases = []
    for prompt in world.prompts("test", prompts, seed):
        p = parse_prompt(prompt)
        items = rng.sample(p.allowed(), p.n + 1)
        for kind, chosen in (("complete", items[: p.n]), ("one fewer", items[: p.n - 1]), ("one more", items)):
            if chosen:
                cases.append((kind, prompt, ListAnswer(" ", [(None, x) for x in chosen], True, "").text()))
    out = rm.score_texts([c[1] for c in cases], [c[2] for c in cases])
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    for i, (kind, _, response) in enumerate(cases):
        tok = out.token_rewards[i, : len(rm.encode_response(response))]  # the period, then the end token
        rows.setdefault(kind, []).append((tok.sum().item(), tok[-2].item(), tok[-1].item(), out.sequence_score[i].item()))
    result = {kind: dict(zip(("token_sum", "period", "end_token", "sequence"), torch.tensor(v).mean(0).tolist()),
                         n=len(v)) for kind, v in rows.items()}
    for kind in ("one fewer", "one more"):
        result[kind]["auc_token_sum"] = auc([r[0] for r in rows["complete"]], [r[0] for r in rows[kind]])
        result[kind]["auc_sequence"] = auc([r[3] for r in rows["complete"]], [r[3] for r in rows[kind]])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rm", help="a reward model directory (fgalign train-rm), trained on the default world")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for kind, r in probe(args.rm, args.prompts, args.seed).items():
        aucs = f"  AUC vs complete: token sum {r['auc_token_sum']:.2f}, sequence {r['auc_sequence']:.2f}" \
            if "auc_token_sum" in r else ""
        print(f"{kind:<9} n={r['n']}  token sum {r['token_sum']:+.3f}  period {r['period']:+.3f}  "
              f"end {r['end_token']:+.3f}  sequence {r['sequence']:+.3f}{aucs}")


if __name__ == "__main__":
    main()

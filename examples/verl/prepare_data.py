"""Prompts for verl: fgalign records (or any JSONL/JSON/parquet with a `prompt`) -> verl's parquet files.

    python examples/verl/prepare_data.py --in RUN/edits.jsonl --out runs/verl-data [--val 256]

verl's RLHFDataset wants chat messages under `prompt` (it applies the policy's chat template) plus a
`data_source` and a `reward_model` entry; fgalign's reward manager ignores the last two. A prompt that is
already a list of messages (TRL's conversational form) is kept as it is. Duplicates are dropped; the split
is seeded, so reruns give the same files.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fgalign.data.io import iter_raw
from fgalign.errors import InputError


def verl_row(prompt, index: int) -> dict:
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return {"data_source": "fgalign", "prompt": messages,
            "reward_model": {"style": "model", "ground_truth": ""}, "extra_info": {"index": index}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--in", dest="src", required=True, help="records with a `prompt` field")
    ap.add_argument("--out", required=True, help="directory for train.parquet and val.parquet")
    ap.add_argument("--val", type=int, default=256, help="prompts held out for verl's validation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seen, prompts = set(), []
    for loc, obj in iter_raw(args.src):
        if not isinstance(obj, dict) or "prompt" not in obj:
            raise InputError("expected an object with a 'prompt'", path=args.src, **loc)
        key = repr(obj["prompt"])
        if key not in seen:
            seen.add(key)
            prompts.append(obj["prompt"])
    random.Random(args.seed).shuffle(prompts)
    n_val = min(args.val, len(prompts) // 10)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("val", prompts[:n_val]), ("train", prompts[n_val:])):
        pq.write_table(pa.Table.from_pylist([verl_row(p, i) for i, p in enumerate(part)]), out / f"{name}.parquet")
    print(f"{len(prompts) - n_val} train / {n_val} val prompts -> {out}")


if __name__ == "__main__":
    main()

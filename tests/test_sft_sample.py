"""SFT and sampling on a user task given by import path; outputs load with plain transformers."""
import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from fgalign.cli import main
from fgalign.data import read_records


def test_sft_then_sample(tmp_path):
    sft = tmp_path / "sft"
    rc = main(["sft", "--task", "toy_task:Counting", "--out", str(sft), "--num-examples", "600", "--epochs", "3",
               "--tiny.n-layer", "1", "--tiny.d-model", "64", "--batch-size", "32"])
    assert rc == 0
    model = AutoModelForCausalLM.from_pretrained(sft)  # plain transformers loads it
    tok = AutoTokenizer.from_pretrained(sft)
    assert model.config.vocab_size == len(tok)
    meta = json.loads((sft / "fgalign_config.json").read_text())
    assert meta["stage"] == "sft" and "torch" in meta["versions"] and meta["config"]["num_examples"] == 600
    assert meta["summary"]["train_loss"] < 3.0  # learned something: uniform over ~200 tokens is ln 200 ≈ 5.3

    pairs = tmp_path / "pairs.jsonl"
    rc = main(["sample", "--policy", str(sft), "--task", "toy_task:Counting", "--num-prompts", "40", "--out", str(pairs),
               "--max-new-tokens", "12"])
    assert rc == 0
    recs = read_records(pairs)
    assert recs, "no pairs"
    for r in recs:
        assert r.meta["score_chosen"] > r.meta["score_rejected"]  # ties dropped, judge picks the higher
    assert (tmp_path / "pairs.jsonl.config.json").exists()


def test_unknown_task_exits_2(tmp_path, capsys):
    rc = main(["sft", "--task", "nope", "--out", str(tmp_path / "x")])
    assert rc == 2 and "unknown task 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

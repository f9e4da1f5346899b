"""train-rm end to end: both levels learn, files and metadata, eval-rm and show, bad data, resume, 2 processes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _rm_data import make_edit_records
from fgalign.cli import main as cli
from fgalign.data.io import write_jsonl
from fgalign.train.reward import RewardConfig, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def edits_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "edits.jsonl"
    write_jsonl(path, make_edit_records(32, seed=0))
    return path


def quick(edits_file, tiny_policy_dir, out, **kw) -> RewardConfig:
    base = dict(data=str(edits_file), out=str(out), model=str(tiny_policy_dir), batch_size=8, lr=3e-3,
                max_steps=24, warmup_ratio=0.0, logging_steps=100, device="cpu")
    base.update(kw)
    return RewardConfig(**base)


@pytest.fixture(scope="module")
def token_rm_dir(edits_file, tiny_policy_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "rm-token"
    run(quick(edits_file, tiny_policy_dir, out))
    return out


def test_token_rm_learns_and_saves_everything(token_rm_dir, edits_file):
    from fgalign.data import read_records
    from fgalign.eval.rm_eval import evaluate_rm
    from fgalign.models.reward import load_reward_model

    names = {p.name for p in token_rm_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "fgalign_rm.json", "fgalign_config.json"} <= names
    meta = json.loads((token_rm_dir / "fgalign_rm.json").read_text())
    assert meta["level"] == "token" and meta["loss"] == "mistake-bce" and meta["anchor"] == 1.0
    assert meta["backbone_kind"] == "causal"
    config = json.loads((token_rm_dir / "fgalign_config.json").read_text())
    assert config["stage"] == "train-rm" and config["config"]["lr"] == 3e-3
    assert not token_rm_dir.with_name("rm-token.checkpoints").exists()  # removed after success
    metrics = evaluate_rm(load_reward_model(token_rm_dir), read_records(edits_file))
    assert metrics["edit_accuracy"] >= 0.8  # a fresh (zero) head scores 0.5: every pair a tie
    assert metrics["auc_inserted_vs_deleted"] > 0.6


@pytest.mark.parametrize("pairs", ["preference", "edit"])
def test_sequence_rm_trains_on_the_chosen_pairs(edits_file, tiny_policy_dir, tmp_path, pairs):
    from fgalign.data import read_records
    from fgalign.eval.rm_eval import evaluate_rm
    from fgalign.models.reward import load_reward_model

    out = tmp_path / f"rm-seq-{pairs}"
    run(quick(edits_file, tiny_policy_dir, out, level="sequence", pairs=pairs))
    rm = load_reward_model(out)
    assert rm.level == "sequence" and rm.info.pairs == pairs and rm.info.loss == "bt"
    metrics = evaluate_rm(rm, read_records(edits_file))
    trained_on = "pair_accuracy" if pairs == "preference" else "edit_accuracy"
    assert metrics[trained_on] >= 0.8
    assert "auc_inserted_vs_deleted" not in metrics  # token metrics only for token RMs


def test_eval_rm_and_show_clis(token_rm_dir, edits_file, tmp_path):
    from fgalign.models.reward import load_reward_model
    from fgalign.report.heatmap import response_pieces

    assert cli(["eval-rm", "--rm", str(token_rm_dir), "--data", str(edits_file)]) == 0
    metrics = json.loads((token_rm_dir / "eval_edits.json").read_text())
    for key in ("pair_accuracy", "edit_accuracy", "auc_inserted_vs_deleted", "auc_kept_vs_deleted_in_rejected",
                "reward_by_label", "corr_total_reward_length"):
        assert key in metrics
    assert metrics["reward_by_label"]["0"]["n"] > 0
    html_out = tmp_path / "heat.html"
    assert cli(["show", "--rm", str(token_rm_dir), "--prompt", "List 2 tools:", "--response",
                " drill, <b>saw</b> & rake.", "--out", str(html_out)]) == 0
    page = html_out.read_text()
    assert "<b>saw" not in page and "&lt;" in page and "&amp;" in page  # every piece escaped
    pieces = response_pieces(load_reward_model(token_rm_dir).tokenizer, " drill, <b>saw</b> & rake.")
    assert "".join(pieces[:-1]) == " drill, <b>saw</b> & rake."
    assert page.count('<span title="') == len(pieces)  # one coloured span per RM token, EOS included
    png_out = tmp_path / "heat.png"
    assert cli(["show", "--rm", str(token_rm_dir), "--prompt", "List 2 tools:", "--response", " drill.",
                "--out", str(png_out)]) == 0
    assert png_out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmap_html_colours_by_sign():
    from fgalign.report.heatmap import heatmap_html

    page = heatmap_html(["a", "<b>", "c"], [-2.0, 0.0, 2.0])
    assert page.count("<span") == 3 and "&lt;b&gt;" in page
    assert 'title="-2.0000" style="background:#67001f' in page  # RdBu's deep red end
    assert 'title="+2.0000" style="background:#053061' in page  # its deep blue end
    with pytest.raises(ValueError):
        heatmap_html(["a"], [1.0, 2.0])


def test_bad_data_exits_2_and_writes_nothing(tiny_policy_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": " a.", "rejected": " b.", "edited": " c."}\n'
                   '{"prompt": "p", "chosen": " a.", "rejected": 3}\n')
    out = tmp_path / "rm"
    code = cli(["train-rm", "--data", str(bad), "--model", str(tiny_policy_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.jsonl" in err and "line 2" in err and "rejected" in err
    noop = tmp_path / "noop.jsonl"
    noop.write_text('{"prompt": "p", "chosen": " a.", "rejected": " b.", "edited": " b."}\n')
    assert cli(["train-rm", "--data", str(noop), "--model", str(tiny_policy_dir), "--out", str(out)]) == 2
    assert "no usable pair" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "noop.jsonl"]  # nothing half-written


def _train_argv(edits_file, policy, out, *extra) -> list[str]:
    return ["train-rm", "--data", str(edits_file), "--model", str(policy), "--out", str(out), "--batch-size", "4",
            "--lr", "3e-3", "--logging-steps", "100", "--device", "cpu", "--seed", "3", *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_killed_run_resumes_to_the_same_weights(edits_file, tiny_policy_dir, tmp_path):
    # The killed run uses as many threads as this process, so that float sums run in the same order.
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS=str(torch.get_num_threads()))
    argv = _train_argv(edits_file, tiny_policy_dir, tmp_path / "resumed", "--max-steps", "12", "--save-steps", "2")
    # Slow each batch down so that the kill lands between checkpoints, never after the end.
    slow = ("import sys, time; import fgalign.train.reward as m; from fgalign.cli import main; "
            "c = m.PairCollator.__call__; m.PairCollator.__call__ = lambda s, f: (time.sleep(0.5), c(s, f))[1]; "
            "sys.exit(main(sys.argv[1:]))")
    child = subprocess.Popen([sys.executable, "-c", slow, *argv], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "resumed.checkpoints" / "checkpoint-4"
    deadline = time.time() + 120
    while not (ckpt / "trainer_state.json").exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (ckpt / "trainer_state.json").exists(), "no checkpoint was written before the kill"
    assert not (tmp_path / "resumed").exists()  # the killed run left no output
    assert cli(argv + ["--resume"]) == 0
    assert cli(_train_argv(edits_file, tiny_policy_dir, tmp_path / "straight", "--max-steps", "12")) == 0
    resumed, straight = _weights(tmp_path / "resumed"), _weights(tmp_path / "straight")
    assert resumed.keys() == straight.keys()
    fresh = _weights(Path(tiny_policy_dir))  # the run really moved the weights
    assert not torch.equal(straight["transformer.h.0.mlp.c_fc.weight"], fresh["transformer.h.0.mlp.c_fc.weight"])
    for name in straight:  # CPU, same seed, same data order: equal up to float noise
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=name)


def test_two_processes_match_one(edits_file, tiny_policy_dir, tmp_path):
    """accelerate + gloo on CPU, 2 x 4 pairs per step vs 1 x 8: same pairs per step, same mean gradient.

    Tolerance: 1e-5 on every weight after 6 SGD steps (the all-reduce sums in another order). SGD, because
    Adam turns float noise in a near-zero gradient (the head bias, which BT is blind to) into lr-sized steps.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    two = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fgalign.cli"]
    sgd = ("--max-steps", "6", "--optim", "sgd", "--lr", "0.5", "--warmup-ratio", "0")
    argv = _train_argv(edits_file, tiny_policy_dir, tmp_path / "two", *sgd)
    proc = subprocess.run(two + argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("train-rm: 32 pairs") == 2 and proc.stdout.count("-> ") == 1  # 2 ranks, 1 writer
    one = _train_argv(edits_file, tiny_policy_dir, tmp_path / "one", *sgd)
    one[one.index("--batch-size") + 1] = "8"
    assert cli(one) == 0
    w_two, w_one = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    fresh = _weights(Path(tiny_policy_dir))
    assert (w_one["transformer.h.0.mlp.c_fc.weight"] - fresh["transformer.h.0.mlp.c_fc.weight"]).abs().max() > 1e-3
    for name in w_one:
        torch.testing.assert_close(w_two[name], w_one[name], rtol=0, atol=1e-5, msg=name)


def test_length_grouped_sampler_is_a_seeded_permutation_with_less_padding():
    import random

    from fgalign.train.reward import LengthGroupedPairSampler

    rng = random.Random(0)
    lengths = [rng.randint(10, 60) for _ in range(1000)]
    epoch = [0]
    sampler = LengthGroupedPairSampler(lengths, batch_size=16, seed=5, epoch_of=lambda: epoch[0])
    first = list(sampler)
    assert sorted(first) == list(range(1000))  # every pair once per epoch
    assert list(sampler) == first  # same (seed, epoch): same order, as a resumed run needs
    epoch[0] = 1
    assert list(sampler) != first  # a new epoch reshuffles

    def padded_tokens(order):
        return sum(16 * max(lengths[i] for i in order[k:k + 16]) for k in range(0, len(order), 16))

    shuffled = list(range(1000))
    rng.shuffle(shuffled)
    assert padded_tokens(first) < 0.8 * padded_tokens(shuffled)

"""The whole pipeline end to end on a micro config: every stage, every method, the report; reruns skip stages."""
import json

import pytest

from fgalign.cli import main
from fgalign.eval.winrate import bootstrap_interval, repetition


def test_bootstrap_and_repetition():
    lo, hi = bootstrap_interval([1.0] * 30 + [0.0] * 10, seed=0)
    assert lo < 0.75 < hi and 0.55 < lo and hi < 0.9
    assert bootstrap_interval([0.5] * 20) == (0.5, 0.5)
    assert repetition(" apple, apple, pear.") == pytest.approx(1 / 3)
    assert repetition(" apple, pear.") == 0.0


def test_micro_pipeline_end_to_end(tmp_path, capsys):
    run, config = tmp_path / "run", tmp_path / "micro.yaml"
    # a third KL target, so that the frontier's order (target by target, every method) can be checked
    config.write_text(open("configs/micro.yaml").read().replace("kl_targets: [1.0, 2.0]", "kl_targets: [1.0, 2.0, 4.0]"))
    assert main(["pipeline", "--config", str(config), "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert set(results["methods"]) == {"ppo-seq", "ppo-seq-edit", "ppo-token", "ppo-token-shaped", "ppo-token-eos"}
    for name, agg in results["methods"].items():
        seed0 = agg["seeds"]["0"]
        assert 0.0 <= agg["win_rate"]["mean"] <= 1.0
        assert seed0["ci95"][0] <= seed0["win_rate"] <= seed0["ci95"][1]
        assert [c["iteration"] for c in seed0["valid_curve"]] == [1, 2]
        assert (run / "ppo" / name / "seed0" / "config.json").exists()  # the final policy loads with transformers
    assert results["reward_models"]["rm-token"]["level"] == "token"
    seed0 = results["methods"]["ppo-token"]["seeds"]["0"]
    assert seed0["kl_target"] == 1.0 and seed0["final_kl"] == seed0["test"]["kl_k1"]  # KL of the evaluated policy
    assert 0.0 <= seed0["lc_win_rate"] <= 1.0 and seed0["lc_ci95"][0] <= seed0["lc_ci95"][1]
    curve = seed0["valid_curve"][0]
    assert {"oracle_score", "length", "truncation", "mistakes", "rm_score", "kl", "lc_win_rate"} <= set(curve)
    frontier = results["frontier"]["ppo-token"]
    assert [p["kl_target"] for p in frontier] == [1.0, 2.0, 4.0]
    order = list(results["stage_seconds"])  # in the order the stages ran: every method at target 2 before any at 4
    assert order.index("ppo ppo-token-eos kl2 seed 0") < order.index("ppo ppo-seq kl4 seed 0")
    assert frontier[0]["win_rate"] == results["methods"]["ppo-token"]["win_rate"]  # the main run is reused
    assert (run / "ppo" / "ppo-token" / "kl2" / "seed0" / "summary.json").exists()
    bon = results["best_of_n"]["curves"]
    assert list(bon)[0] == "oracle (task score)" and [p["n"] for p in bon["oracle (task score)"]] == [1, 2, 4]
    assert {f"{run / rm} ({kind})" for rm, kind in (("rm-token", "token sum"), ("rm-seq", "sequence"))} <= set(bon)
    peaks = results["stage_peak_rss_gib"]
    assert set(peaks) == set(results["stage_seconds"]) and all(0.05 < gib < 24 for gib in peaks.values())
    report = (run / "report.md").read_text()
    assert "| sft |" in report and "peak RSS (GiB)" in report
    assert "Best-of-n: each reward model's ceiling" in report
    assert "| ppo-token |" in report and "winrate_vs_iteration.png" in report
    assert "Win rate–KL frontier" in report and "LC win rate" in report
    assert "Iterations to reach the baseline" in report and "| ppo-seq | " in report
    assert "each PPO run gets, at the KL it spent" in report and "share of its gain" in report
    for png in ("winrate_vs_iteration", "winrate_vs_kl", "training_curves", "frontier", "diagnostics_ppo-token",
                "best_of_n"):
        assert (run / "plots" / f"{png}.png").stat().st_size > 1000

    # A rerun skips every stage whose output exists.
    capsys.readouterr()
    assert main(["pipeline", "--config", "configs/micro.yaml", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "sft: exists, skipped" in out and "ppo ppo-token seed 0: exists, skipped" in out
    assert "best-of-n: exists, skipped" in out


def test_bad_config_names_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("task: default\nsft: {n_exampels: 10}\n")
    assert main(["pipeline", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "sft.n_exampels" in err and "unknown option" in err and str(cfg) in err
    assert not (tmp_path / "run").exists()  # refused input writes nothing, not even an empty run folder


def test_peak_rss_sees_a_stage_peak_that_is_gone_after_it():
    import time

    from fgalign.runinfo import peak_rss

    with peak_rss(interval=0.01) as before:
        pass
    with peak_rss(interval=0.01) as peak:
        block = bytearray(512 * 2**20)  # 0.5 GiB, touched page by page
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(0.3)  # the polling thread reads it while it is held
        del block
    assert peak["gib"] > before["gib"] + 0.4

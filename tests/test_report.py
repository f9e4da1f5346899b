"""The report's iteration table (when each method reaches the baseline's best) and optimizer table (its RM's best-of-n)."""
from fgalign.report.summary import iterations_table


def _method(*seeds):
    return {"seeds": {str(i): {"valid_curve": [{"iteration": it, "win_rate": w} for it, w in curve]}
                      for i, curve in enumerate(seeds)}}


def test_iterations_table_reads_the_mean_validation_curves():
    results = {"methods": {
        "ppo-seq": _method([(2, 0.50), (4, 0.56), (6, 0.60), (8, 0.58)], [(2, 0.52), (4, 0.58), (6, 0.62), (8, 0.60)]),
        "ppo-token": _method([(2, 0.62), (4, 0.66), (6, 0.64), (8, 0.63)],
                             [(2, 0.60), (4, 0.64), (6, 0.66), (8, 0.65)]),
        "ppo-weak": _method([(2, 0.50), (4, 0.52), (6, 0.55), (8, 0.54)], [(2, 0.50), (4, 0.52), (6, 0.55), (8, 0.54)]),
    }}
    table = iterations_table(results)
    assert "best validation win rate 0.610 at iteration 6" in table  # mean of 0.60 and 0.62
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ppo")}
    assert rows["ppo-token"].endswith("| 0.650 | 2 | 0.33 |")  # 0.61 at its first validation, 6 for the baseline
    assert rows["ppo-seq"].endswith("| 0.610 | 6 | 1.00 |")
    assert "not reached" in rows["ppo-weak"]


def test_iterations_table_needs_the_baseline():
    assert iterations_table({"methods": {"ppo-token": _method([(2, 0.6)])}}) is None


def _curve(*wins):  # best-of-n at n = 1, 2, 4 (KL bounds 0, 0.19, 0.64)
    from fgalign.eval.best_of_n import kl_bound
    return [{"n": n, "kl_bound": kl_bound(n), "win_rate": w} for n, w in zip((1, 2, 4), wins)]


def _ppo(rm, reward, win, kl):
    return {"seeds": {"0": {"rm": rm, "reward": reward, "kl_target": 1.0}},
            "win_rate": {"mean": win, "std": 0.0}, "kl": {"mean": kl, "std": 0.0}}


def test_optimizer_table_reads_each_method_against_its_own_rms_best_of_n():
    from fgalign.eval.best_of_n import kl_bound
    from fgalign.report.summary import best_of_n_at, optimizer_table

    curves = {"oracle (task score)": _curve(0.5, 0.6, 0.8), "runs/x/rm-token (token sum)": _curve(0.5, 0.55, 0.7),
              "runs/x/rm-token (sequence)": _curve(0.5, 0.5, 0.5), "runs/x/rm-seq (sequence)": _curve(0.5, 0.6, 0.6)}
    assert best_of_n_at(curves["runs/x/rm-token (token sum)"], kl_bound(2)) == 0.55
    assert best_of_n_at(curves["runs/x/rm-token (token sum)"], 5.0) == 0.7  # past n = 4: the last point
    results = {"best_of_n": {"curves": curves},
               "methods": {"ppo-token": _ppo("rm-token", "token", 0.6, kl_bound(4)),
                           "ppo-seq": _ppo("rm-seq", "sequence", 0.55, kl_bound(2))}}
    rows = {line.split(" | ")[0].strip("| "): line for line in optimizer_table(results).splitlines()
            if line.startswith("| ppo")}
    # token reward: ranked by the token sum (0.7 at n = 4), not the sequence score; +0.10 of +0.20, oracle +0.30
    assert "rm-token (token sum): 0.700 | 50% | 0.800 | 33% |" in rows["ppo-token"]
    assert "rm-seq (sequence): 0.600 | 50% | 0.600 | 50% |" in rows["ppo-seq"]


def test_optimizer_table_needs_a_best_of_n():
    from fgalign.report.summary import optimizer_table

    assert optimizer_table({"methods": {"ppo-token": _ppo("rm-token", "token", 0.6, 0.5)}}) is None


def test_best_of_n_table_shows_only_the_aucs_it_can_read():
    from fgalign.report.summary import best_of_n_table

    curve = [{"n": 1, "kl_bound": 0.0, "win_rate": 0.5}, {"n": 2, "kl_bound": 0.19, "win_rate": 0.6}]
    long_world = {"curves": {"oracle": curve, "rm-token (token sum)": curve}, "mistake_sensitivity": {
        "rm-token (token sum)": {"repeat": {"auc": None, "n": 0, "auc_one_more": 0.67, "n_pairs": 2469},
                                 "unparsable": {"auc": None, "n": 495, "auc_one_more": None, "n_pairs": 0}}}}
    table = best_of_n_table(long_world)
    assert "mistake-free vs one mistake" not in table  # no answer on this world is clean: nothing to show
    assert "| rm-token (token sum) | 0.67 | – |" in table.split("every other count equal")[1]
    default_world = {"curves": long_world["curves"], "mistake_sensitivity": {  # stored before auc_one_more existed
        "rm-token (token sum)": {"repeat": {"auc": 0.96, "n": 40}, "unparsable": {"auc": 0.97, "n": 30}}}}
    table = best_of_n_table(default_world)
    assert "| rm-token (token sum) | 0.96 | 0.97 |" in table and "every other count equal" not in table

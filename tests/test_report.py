"""The report's iteration table: when each method reaches the baseline's best validation win rate."""
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

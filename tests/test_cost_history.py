"""benchmarks/cost_history.py: when the learned costs freeze and how cheap the frozen dimensions get, per run
(RESULTS.md section 6, round 27)."""

from __future__ import annotations

import pytest
from test_benchmark import REPO, _benchmark_script, _rec, _write_records


@pytest.fixture(scope="module")
def cost_history():
    return _benchmark_script("cost_history")


def _row(epoch, frozen, price):
    return {"epoch": float(epoch), "cost_frozen": float(frozen), "price_min": price, "price_max": 1.0, "gamma": 0.01}


def test_summary_of_a_history(cost_history):
    rows = [_row(4, 0, 1.0), _row(5, 2, 0.05), _row(6, 3, 0.01), _row(7, 4, 1.0)]
    s = cost_history.summarize_history(rows, n_dims=4, selected_epoch=6)
    assert s == {"first_freeze": 5, "last_freeze": 7, "frozen_at_selected": 3, "lowest_price": 0.01,
                 "lowest_price_epoch": 6}
    never = cost_history.summarize_history(rows[:1], n_dims=4, selected_epoch=2)  # selected before the first row
    assert never["first_freeze"] is None and never["last_freeze"] is None and never["frozen_at_selected"] == 0
    with pytest.raises(ValueError, match="history is empty"):
        cost_history.summarize_history([], n_dims=4, selected_epoch=0)


def test_docstring_example(cost_history):
    import doctest

    assert doctest.testmod(cost_history, verbose=False).failed == 0


def test_script_reports_runs_with_a_history_only(cost_history, tmp_path, capsys):
    cal = _rec("cal", "property_range", "top", 3, 0.4567, "cal")
    cal["selected_epoch"] = 5
    cal["cal"]["cost_history"] = [_row(4, 0, 1.0), _row(5, 1, 0.02), _row(6, 2, 1.0)]
    fixed = _rec("fixed", "property_range", "top", 3, 0.4, "cal")  # fixed costs: no update, no history
    folder = _write_records(tmp_path / "probe" / "records", [cal, fixed, _rec("erm", "property_range", "top", 3, 0.5)])
    assert cost_history.main([str(folder), "--dims", "2"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2:] == ["| probe | cal | top | 3 | 0.4567 | 5 | 5 | 6 | 1 | 0.02 (5) |"]
    with pytest.raises(SystemExit):
        cost_history.main([str(folder), "--dims", "0"])


RESULTS = REPO / "benchmarks" / "results"
_RERUNS = [  # (dataset, committed config, method, seed, RESULTS.md cell of round 27)
    ("perovskites", "perovskites_cpu_frozen_full_prior_top_e30", "erm", 0, "0.4404 → 0.4425 (+0.5 %)"),
    ("perovskites", "perovskites_cpu_frozen_full_prior_top_e30", "erm", 1, "0.4573 → 0.4636 (+1.4 %)"),
    ("perovskites", "perovskites_cpu_frozen_full_prior_top_e30", "cal_in_step_every_cluster8", 0,
     "0.4545 → 0.5105 (+12.3 %)"),
    ("perovskites", "perovskites_cpu_frozen_full_prior_top_e30", "cal_in_step_every_cluster8", 1,
     "0.4728 → 0.4889 (+3.4 %)"),
    ("log_gvrh", "log_gvrh_cpu_frozen_full_prior_top_confirm_e30", "erm", 5, "0.1796 → 0.1798 (+0.1 %)"),
    ("log_gvrh", "log_gvrh_cpu_frozen_full_prior_top_confirm_e30", "erm", 6, "0.1830 → 0.1798 (-1.8 %)"),
    ("log_gvrh", "log_gvrh_cpu_frozen_full_prior_top_confirm_e30", "cal_in_step_every_cluster8", 5,
     "0.1758 → 0.1679 (-4.5 %)"),
    ("log_gvrh", "log_gvrh_cpu_frozen_full_prior_top_confirm_e30", "cal_in_step_every_cluster8", 6,
     "0.1654 → 0.1632 (-1.4 %)"),
]


@pytest.mark.parametrize(("dataset", "committed", "method", "seed", "cell"), _RERUNS)
def test_round27_reruns_of_committed_runs(dataset, committed, method, seed, cell):
    """The reruns' rows of RESULTS.md round 27, from the records: same split, a different test MAE."""
    import json

    name = f"{method}__property_range__top__{seed}.json"
    old = json.loads((RESULTS / committed / "records" / name).read_text())
    new = json.loads((RESULTS / f"{dataset}_cpu_frozen_full_prior_top_costs_e30" / "records" / name).read_text())
    assert (old["n_train"], old["n_val"], old["data_mean"]) == (new["n_train"], new["n_val"], new["data_mean"])
    a, b = old["metrics"]["test"]["mae"], new["metrics"]["test"]["mae"]
    assert f"{a:.4f} → {b:.4f} ({100 * (b / a - 1):+.1f} %)" == cell
    assert cell in (REPO / "benchmarks" / "RESULTS.md").read_text()


def test_round27_cost_histories(cost_history, capsys):
    """The reruns' histories as RESULTS.md round 27 describes them: first freeze in epoch 4, all frozen by 14-20."""
    folders = [str(RESULTS / f"{d}_cpu_frozen_full_prior_top_costs_e30" / "records")
               for d in ("perovskites", "log_gvrh")]
    assert cost_history.main(folders) == 0
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in capsys.readouterr().out.splitlines()[2:]]
    assert len(rows) == 4 and {r[6] for r in rows} == {"4"}
    assert sorted(int(r[7]) for r in rows) == [14, 19, 19, 20] and {r[8] for r in rows} == {"64"}
    prices = [float(r[9].split()[0]) for r in rows]
    assert 0.002 <= min(prices) and max(prices) <= 0.006

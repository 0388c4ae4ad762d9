"""benchmarks/cost_history.py: when the learned costs freeze and how cheap the frozen dimensions get, per run
(RESULTS.md section 6, round 27)."""

from __future__ import annotations

import pytest
from test_benchmark import _benchmark_script, _rec, _write_records


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

"""benchmarks/arm_matrix.py: every arm against ERM and the control, pooled over record folders, with the rules of
the configs (RESULTS.md section 6, round 27)."""

from __future__ import annotations

import math

import pytest
from test_benchmark import REPO, _benchmark_script, _rec, _write_records

NAN = (math.nan, math.nan)


@pytest.fixture(scope="module")
def arm_matrix():
    return _benchmark_script("arm_matrix")


@pytest.mark.parametrize(
    ("mean", "interval", "kwargs", "expected"),
    [
        (0.02, (0.01, 0.04), {}, "worse"),
        (-0.01, (-0.03, 0.02), {}, "no worse"),
        (0.01, (-0.02, 0.03), {}, "unresolved"),  # the bound itself is not below +3 %
        (-0.02, (-0.04, -0.01), {}, "gain"),
        (-0.02, (-0.04, -0.01), {"adversarial": True}, "gain, no control"),
        (-0.02, (-0.04, -0.01), {"adversarial": True, "control_interval": (-0.01, 0.01)}, "gain, control not beaten"),
        (-0.02, (-0.04, -0.01), {"adversarial": True, "control_interval": (-0.02, -0.01)}, "gain, beats control"),
        (-0.05, (-0.08, -0.01), {"adversarial": True, "control_interval": (-0.02, -0.01)},
         "gain, beats control, meets 5 %"),
        (-0.06, (-0.08, -0.01), {}, "gain"),  # a control's own gain is never credited to a perturbation
        (0.01, (-0.01, 0.029), {"in_distribution": True}, "within +3 %"),
        (0.02, (-0.01, 0.04), {"in_distribution": True}, "not shown within +3 %"),
        (0.02, (0.01, 0.02), {"in_distribution": True}, "within +3 %"),  # higher than ERM, inside the target
        (-0.1, NAN, {"adversarial": True}, "n/a (one test set)"),
    ],
)
def test_verdict_applies_the_configs_rules(arm_matrix, mean, interval, kwargs, expected):
    assert arm_matrix.verdict(mean, interval, **kwargs) == expected


def test_verdict_docstring_examples(arm_matrix):
    import doctest

    assert doctest.testmod(arm_matrix, verbose=False).failed == 0


def _arm_records(method, kind, factor, kwargs=None, split="LOCO"):
    """Records of one arm on 4 folds x 2 seeds; the test MAE is ERM's x factor(fold)."""
    out = []
    for fold in range(4):
        for seed in range(2):
            r = _rec(method, split, fold, seed, (1.0 + 0.1 * fold + 0.01 * seed) * factor(fold), kind)
            r["method_kwargs"] = dict(kwargs or {})
            out.append(r)
    return out


def _folders(tmp_path):
    """ERM and the project's arm in one folder, a fixed-cost arm and the control in another (as the configs are)."""
    first = _arm_records("erm", "erm", lambda f: 1.0) + _arm_records("cal_in_step", "cal", lambda f: 0.9 - 0.01 * f)
    second = (_arm_records("fixed_cost", "cal", lambda f: 1.04 + 0.01 * f, {"cost_step": 0.0})
              + _arm_records("control", "cal", lambda f: 0.98 + 0.005 * f, {"perturb": False}))
    return _write_records(tmp_path / "a" / "records", first), _write_records(tmp_path / "b" / "records", second)


def test_script_pools_folders_and_compares_with_erm_and_the_control(arm_matrix, tmp_path, capsys):
    a, b = _folders(tmp_path)
    assert arm_matrix.main([str(a), str(b)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 + 3  # header, rule, one row per arm other than ERM
    cells = {r.split(" | ")[2]: [c.strip() for c in r.strip("|").split("|")] for r in rows[2:]}
    assert [r.split(" | ")[2] for r in rows[2:]] == ["cal_in_step", "fixed_cost", "control"]  # adversarial first
    cal, fixed, control = cells["cal_in_step"], cells["fixed_cost"], cells["control"]
    assert cal[3] == "-11.5 %" and cal[5] == "8 / 4"  # mean of 0.90, 0.89, 0.88, 0.87 - 1
    assert cal[7] == "**gain, beats control, meets 5 %**" and cal[8] == "a"
    # against the control on the same runs: mean of (0.9 - 0.01 f) / (0.98 + 0.005 f) - 1 over folds f = 0..3
    assert cal[6].startswith("-10.4 % (-") and fixed[6].startswith("+6.8 % (+")
    assert fixed[3] == "+5.5 %" and fixed[7] == "**worse**" and fixed[8] == "b"
    assert control[6] == "" and control[7] == "**gain**"  # the control is not compared with itself


def test_script_without_a_control_says_so(arm_matrix, tmp_path, capsys):
    folder = _write_records(tmp_path / "records", _arm_records("erm", "erm", lambda f: 1.0)
                            + _arm_records("cal", "cal", lambda f: 0.9))
    assert arm_matrix.main([str(folder)]) == 0
    [row] = capsys.readouterr().out.splitlines()[2:]
    assert row.startswith("| d | LOCO | cal | -10.0 % | -10.0 to -10.0 % | 8 / 4 |  | **gain, no control** | test_")


def test_script_in_distribution_and_one_test_set(arm_matrix, tmp_path, capsys):
    recs = (_arm_records("erm", "erm", lambda f: 1.0, split="random") + _arm_records("cal", "cal", lambda f: 1.01,
                                                                                     split="random"))
    recs += [_rec("erm", "property_range", "top", s, 1.0) for s in range(3)]
    recs += [_rec("cal", "property_range", "top", s, 0.9, "cal") for s in range(3)]
    folder = _write_records(tmp_path / "records", recs)
    assert arm_matrix.main([str(folder)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert "| property_range | cal | -10.0 % | n/a | 3 / 1 |  | **n/a (one test set)** |" in rows[0]
    assert "| random | cal | +1.0 % | +1.0 to +1.0 % | 8 / 4 |  | **within +3 %** |" in rows[1]


def test_script_rejects_a_run_in_two_folders_and_an_empty_folder(arm_matrix, tmp_path):
    erm = _arm_records("erm", "erm", lambda f: 1.0)
    a = _write_records(tmp_path / "a" / "records", erm)
    b = _write_records(tmp_path / "b" / "records", erm[:1])
    with pytest.raises(SystemExit, match="more than one of the folders"):
        arm_matrix.main([str(a), str(b)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        arm_matrix.main([str(tmp_path / "empty")])


def test_committed_matrix_is_reproduced_from_the_committed_records(arm_matrix, capsys):
    """benchmarks/results/arm_matrix.md is the output of ``python benchmarks/arm_matrix.py`` (its default folders)."""
    assert arm_matrix.main([]) == 0
    committed = (REPO / "benchmarks" / "results" / "arm_matrix.md").read_text()
    assert capsys.readouterr().out == committed

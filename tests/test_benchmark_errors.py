"""OOD benchmark: the runner's own bad-input errors, and `mgl-cal benchmark CONFIG` end to end with resume.

The config-schema errors and the fold-file errors (unknown family, unknown fold key, too many folds) are
tested in ``test_benchmark.py``; this file covers what the runner itself rejects once it has the data: an
empty test part, fewer than 2 training structures, ``select = "best_val"`` without validation, a bad
target field, bad ``run_one`` arguments, a pretrained encoder over other elements, a config of the wrong
type, and how ``mgl-cal benchmark`` reports those errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import pytest

import builders as b
import matgl_cal.benchmark._runner as runner_mod
from matgl_cal.benchmark import config_from_dict, plan_runs, prepare_benchmark, run_benchmark, run_one
from matgl_cal.cli import main
from matgl_cal.datasets import unregister_dataset
from test_benchmark import DATASET, _as_toml, _tiny_config, register_tiny_dataset

#: A second tiny dataset whose fold file has the faulty folds the runner must reject.
BAD = "tiny_bench_errors"


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """20 structures (ids 18, 19 without a target, a string field ``label``) and a LOCO family whose fold
    ``"0"`` is sound, fold ``"1"`` tests only ids 18 and 19 (dropped: empty test part) and fold ``"2"`` has an
    empty validation part."""
    root = tmp_path_factory.mktemp("baddata")
    structures, targets = b.property_structures(20, seed=1)
    records = [
        {"id": i, "target": None if i >= 18 else y, "label": "Fm-3m", "nsites": len(s), "structure": s.as_dict()}
        for i, (s, y) in enumerate(zip(structures, targets, strict=True))
    ]
    train = list(range(12))
    folds = {
        "train": {"0": train, "1": train, "2": train},
        "val": {"0": [12, 13, 14], "1": [12, 13, 14], "2": []},
        "test": {"0": [15, 16, 17], "1": [18, 19], "2": [15, 16, 17]},
    }
    register_tiny_dataset(root, BAD, records, folds)
    yield root
    unregister_dataset(BAD)


def _bad_config(root: Path, out: Path, folds: list, **over) -> dict:
    """The tiny config of ``test_benchmark`` on :data:`BAD` with the given LOCO folds."""
    return _tiny_config(root, out, dataset=BAD, splits=[{"family": "LOCO", "folds": folds}], **over)


@pytest.fixture
def nan_targets_dropped():
    """Loading :data:`BAD` drops ids 18, 19 with a UserWarning; expect it rather than let it through."""
    with pytest.warns(UserWarning, match=r"dropped 2 entries whose 'target' is missing/NaN"):
        yield


# ----------------------------------------------------------------------------- the runner's data checks


#: The runner's error for fold "1", whose test ids all lack a target.
EMPTY_TEST = (r"^split 'LOCO' fold '1': empty test part: its 2 test ids are not in the loaded dataset \(their targets "
              r"are missing or non-numeric\)$")


def test_empty_test_part_stops_the_benchmark_before_any_run(bad_data, tmp_path, nan_targets_dropped):
    cfg = _bad_config(bad_data, tmp_path, [0, 1])
    # fold 1's test ids are all dropped (no target): the runner names split, fold and the empty part
    with pytest.raises(ValueError, match=EMPTY_TEST):
        run_benchmark(cfg)
    # every fold is checked before the first training run: fold 0, which is fine, was not trained either
    assert not (Path(cfg["output_dir"]) / "records").exists()


def test_empty_test_part_through_run_one_and_prepare(bad_data, tmp_path, nan_targets_dropped):
    cfg = _bad_config(bad_data, tmp_path, [1])
    with pytest.raises(ValueError, match=EMPTY_TEST):
        run_one(cfg, "erm", "LOCO", 1, 0)
    with pytest.raises(ValueError, match=EMPTY_TEST):
        prepare_benchmark(cfg)


@pytest.mark.parametrize(
    ("training", "left"),
    [({"max_train": 1}, 1), ({"max_atoms": 1}, 0)],  # every tiny structure has 2 atoms
    ids=["max_train", "max_atoms"],
)
def test_too_few_training_structures(tiny_data, tmp_path, training, left):
    raw = _tiny_config(tiny_data, tmp_path)
    raw["training"] = {**raw["training"], **training}
    settings = config_from_dict(raw).training
    with pytest.raises(
        ValueError,
        match=rf"^split 'LOCO' fold '0': {left} training structures left of 12 after max_atoms={settings.max_atoms}, "
        rf"max_train={settings.max_train}; need >= 2$",
    ):
        run_benchmark(raw)
    assert not (Path(raw["output_dir"]) / "records").exists()


def test_best_val_needs_a_validation_part(bad_data, tmp_path, nan_targets_dropped):
    cfg = _bad_config(bad_data, tmp_path, [2])
    assert config_from_dict(cfg).training.select == "best_val"  # the default
    with pytest.raises(
        ValueError,
        match=r"^split 'LOCO' fold '2': training.select='best_val' needs validation structures but the validation "
        r"part is empty \(0 before max_atoms=\d+\); set training.select = 'last', or raise max_atoms$",
    ):
        run_benchmark(cfg)
    # the same fold is accepted when the last epoch is kept: 10 training (max_train) + 3 test structures
    last = _bad_config(bad_data, tmp_path, [2])
    last["training"] = {**last["training"], "select": "last"}
    assert prepare_benchmark(last) == 13


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (
            "gap",
            r"^target field 'gap' not in dataset 'tiny_bench_errors'; numeric fields: \['id', 'nsites', 'target'\]",
        ),
        ("label", r"^target field 'label' must hold numbers; entry 0 has str value 'Fm-3m'\. Pick a scalar numeric"),
    ],
    ids=["missing", "non_numeric"],
)
def test_bad_target_field(bad_data, tmp_path, target, match):
    cfg = _bad_config(bad_data, tmp_path, [0], target=target)
    assert [s.fold for s in plan_runs(cfg)] == ["0", "0"]  # planning reads the fold file only
    with pytest.raises(ValueError, match=match):
        run_benchmark(cfg)  # the dataset is loaded (and its target read) before any run


# ----------------------------------------------------------------------------- arguments and config types


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("sal", "LOCO", 0, 0), r"^unknown method 'sal'; configured methods: \['erm', 'cal'\]$"),
        (("erm", "random", 0, 0), r"^unknown split family 'random'; configured splits: \['LOCO'\]$"),
        (("erm", "LOCO", 0, -1), r"^seed must be an int >= 0, got -1$"),
        (("erm", "LOCO", 0, True), r"^seed must be an int >= 0, got True$"),
        (("erm", "LOCO", 0, "0"), r"^seed must be an int >= 0, got '0'$"),
        (("erm", "LOCO", 7, 0), r"^unknown fold_key '7' for family 'LOCO'; available: \['0', '1'\]\.$"),
    ],
)
def test_run_one_argument_errors(tiny_data, tmp_path, monkeypatch, args, match):
    def boom(*a, **k):
        raise AssertionError("the structures were loaded before the arguments were checked")

    monkeypatch.setattr("matgl_cal.datasets.load_dataset", boom)
    with pytest.raises(ValueError, match=match):
        run_one(_tiny_config(tiny_data, tmp_path), *args)


@pytest.mark.parametrize("config", [42, ["tiny.toml"], None], ids=["int", "list", "None"])
@pytest.mark.parametrize("entry", [run_benchmark, run_one, plan_runs, prepare_benchmark], ids=lambda f: f.__name__)
def test_config_of_the_wrong_type(entry, config):
    args = (config, "erm", "LOCO", 0, 0) if entry is run_one else (config,)
    expected = "config must be a BenchmarkConfig, a mapping or a path to a TOML/YAML file, got "
    with pytest.raises(TypeError, match=rf"^{expected}{type(config).__name__}$"):
        entry(*args)


def test_pretrained_encoder_over_other_elements(tiny_data, tmp_path, monkeypatch):
    import torch
    from matgl.apps.pes import Potential

    torch.manual_seed(0)
    Potential(model=b.tiny_m3gnet(b.ELEMENTS, intensive=False, basis=2)).save(tmp_path / "models" / "four-el")
    monkeypatch.setenv("MATGL_CAL_MODELS", str(tmp_path / "models"))
    cfg = _tiny_config(tiny_data, tmp_path, model={"pretrained": "four-el", "cutoff": b.CUTOFF})
    with pytest.raises(
        ValueError,
        match=r"^model.pretrained = 'four-el' must use MatGL's default element_types \(the benchmark's graphs index "
        r"them\); got 4 elements starting \['Cu', 'Ni', 'Al', 'O'\]$",
    ):
        run_one(cfg, "erm", "LOCO", 0, 0)


# ----------------------------------------------------------------------------- the CLI


def test_cli_benchmark_end_to_end_then_resume(tiny_data, tmp_path, monkeypatch, capsys, caplog):
    """`mgl-cal benchmark CONFIG`: records, RESULTS_<name>.md and figures; a second call trains nothing."""
    raw = _tiny_config(tiny_data, tmp_path, name="tiny_cli")
    toml = tmp_path / "tiny_cli.toml"
    toml.write_text(_as_toml(raw))
    out = Path(raw["output_dir"])
    names = ["erm__LOCO__0__0.json", "cal__LOCO__0__0.json"]

    assert main(["benchmark", str(toml)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'RESULTS_tiny_cli.md'}"
    paths = [out / "records" / n for n in names]
    assert sorted(p.name for p in (out / "records").iterdir()) == sorted(names)
    for p in paths:
        rec = json.loads(p.read_text())
        assert rec["benchmark"] == "tiny_cli" and rec["n_test"] == 5 and math.isfinite(rec["metrics"]["test"]["mae"])
        assert rec["config"]["source"] == str(toml)
    assert json.loads(paths[1].read_text())["optimizer_steps"]["adversarial"] == 1  # the CAL arm ran as CAL
    report = (out / "RESULTS_tiny_cli.md").read_text()
    assert "| erm |" in report and "| cal |" in report and f"mgl-cal benchmark {toml}" in report
    assert (out / "tiny_cli_bar_LOCO.png").stat().st_size > 1000
    assert (out / "tiny_cli_parity_LOCO_0.png").stat().st_size > 1000

    # resume: nothing is trained or even loaded again, the records stay as they are, the report is rewritten
    mtimes = [p.stat().st_mtime_ns for p in paths]

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner_mod, "_train_and_record", boom)
    monkeypatch.setattr("matgl_cal.datasets.load_dataset", boom)
    (out / "RESULTS_tiny_cli.md").unlink()
    caplog.set_level(logging.INFO, logger="matgl_cal.benchmark")
    assert main(["benchmark", str(toml)]) == 0
    assert "Benchmark tiny_cli: 2 runs, 2 done, 0 to run" in caplog.text
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert (out / "RESULTS_tiny_cli.md").read_text() == report


def test_cli_benchmark_reports_errors_without_a_traceback(bad_data, tiny_data, tmp_path, capsys):
    """Bad input gives exit code 2 and one line `mgl-cal: error: <message>` on stderr."""
    cases = {
        "unknown_key": (
            {**_tiny_config(tiny_data, tmp_path / "a"), "sedes": [0]},
            "mgl-cal: error: unknown key 'sedes' in the config's top level; allowed keys: [",
        ),
        "unknown_dataset": (
            _tiny_config(tiny_data, tmp_path / "b", dataset="tiny_bench_tset"),
            "mgl-cal: error: unknown dataset 'tiny_bench_tset'; known datasets: ",
        ),
        "empty_test": (
            _bad_config(bad_data, tmp_path / "c", [1]),
            "mgl-cal: error: split 'LOCO' fold '1': empty test part",
        ),
    }
    for label, (raw, message) in cases.items():
        toml = tmp_path / f"{label}.toml"
        body = _as_toml({k: v for k, v in raw.items() if k != "sedes"})
        toml.write_text(("sedes = [0]\n" if "sedes" in raw else "") + body)
        with pytest.warns(UserWarning) if label == "empty_test" else contextlib.nullcontext():
            assert main(["benchmark", str(toml)]) == 2, label
        err = capsys.readouterr().err
        assert err.startswith(message) and "Traceback" not in err, (label, err)
        if label == "unknown_dataset":
            assert DATASET in err and BAD in err  # the known ones are listed, the registered test sets among them

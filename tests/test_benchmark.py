"""OOD benchmark: config schema and errors, a tiny end-to-end run, resume, and the report."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import matgl_cal.benchmark._runner as runner_mod
from matgl_cal.benchmark import (
    METHOD_PRESETS,
    config_from_dict,
    load_config,
    load_records,
    make_report,
    paired_change_interval,
    paired_test,
    parse_shard,
    plan_runs,
    prepare_benchmark,
    run_benchmark,
    run_one,
    summarize,
)
from matgl_cal.cli import main
from matgl_cal.datasets import DataFile, DatasetInfo, register_dataset, unregister_dataset

import builders as b

REPO = Path(__file__).resolve().parents[1]

DATASET = "tiny_bench_test"


def _base_config(**over) -> dict:
    cfg = {
        "name": "tiny",
        "dataset": "matbench_dielectric",
        "seeds": [0],
        "splits": [{"family": "LOCO", "folds": 2}],
        "methods": {"erm": {}, "cal": {}},
    }
    cfg.update(over)
    return cfg


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_presets():
    cfg = config_from_dict(_base_config(methods=["erm", "cal_faithful", "cal", "fixed_cost", "extra_steps_control"]))
    assert cfg.model.family == "M3GNet" and cfg.training.select == "best_val" and cfg.training.accelerator == "auto"
    assert cfg.output_dir == str(Path("benchmarks") / "results" / "tiny")
    assert cfg.split("LOCO").count == 2
    m = {x.name: x for x in cfg.methods}
    assert m["erm"].kind == "erm" and dict(m["erm"].kwargs) == {}
    assert m["cal_faithful"].kwargs["environments"] == "random" and m["cal_faithful"].kwargs["hardness"] == "loss"
    assert m["cal_faithful"].kwargs["space"] == "readout" and "cost_step" not in m["cal_faithful"].kwargs
    assert m["cal"].kwargs["environments"] == "anion" and m["cal"].kwargs["hardness"] == "mc_dropout"
    assert m["fixed_cost"].kwargs["cost_step"] == 0.0
    assert m["extra_steps_control"].kwargs["perturb"] is False
    # the control arm has the same schedule as cal
    same = {k: v for k, v in m["extra_steps_control"].kwargs.items() if k != "perturb"}
    assert same == dict(m["cal"].kwargs)
    assert set(METHOD_PRESETS) == {"erm", "cal_faithful", "cal", "fixed_cost", "extra_steps_control"}


def test_config_overrides_and_custom_method():
    cfg = config_from_dict(
        _base_config(methods={"cal": {"attack_steps": 5}, "big": {"preset": "cal", "max_perturbation": 2.0},
                              "mine": {"kind": "cal", "environments": "chemsys"}})
    )
    assert cfg.method("cal").kwargs["attack_steps"] == 5 and cfg.method("cal").kwargs["hardness"] == "mc_dropout"
    assert cfg.method("big").kwargs["max_perturbation"] == 2.0 and cfg.method("big").preset == "cal"
    assert cfg.method("mine").preset is None and dict(cfg.method("mine").kwargs) == {"environments": "chemsys"}
    # TOML has no null: hardness = "none" draws the extra batches at random (the control of the hardness ranking)
    rnd = config_from_dict(
        _base_config(methods={"random_steps": {"preset": "extra_steps_control", "hardness": "none"}}))
    kw = rnd.method("random_steps").kwargs
    assert kw["hardness"] is None and kw["perturb"] is False and kw["adversarial_batches"] == 3
    from matgl_cal.benchmark import make_callback

    assert make_callback(rnd.method("random_steps"), seed=0).hardness is None


def test_toml_and_yaml_files(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        'dataset = "matbench_dielectric"\nseeds = [1, 2]\n[training]\nepochs = 3\nmax_train = 50\n'
        '[[splits]]\nfamily = "random"\nfolds = 2\n[methods.erm]\n[methods.cal]\nwarmup_epochs = 1\n'
    )
    cfg = load_config(toml)
    assert cfg.name == "c" and cfg.seeds == (1, 2) and cfg.training.epochs == 3 and cfg.training.max_train == 50
    assert cfg.split("random").folds == ("0", "1") and cfg.method("cal").kwargs["warmup_epochs"] == 1
    assert cfg.source == str(toml)
    yml = tmp_path / "c.yaml"
    yml.write_text(
        "dataset: matbench_dielectric\nseeds: [0]\nsplits:\n- {family: random, folds: [3]}\nmethods: [erm]\n"
    )
    assert load_config(yml).split("random").folds == ("3",)


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ({"sedes": [0]}, ValueError, r"unknown key 'sedes' in the config's top level; allowed keys: .*'seeds'"),
        ({"model": {"unit": 8}}, ValueError, r"unknown key 'unit' in model; allowed keys: .*'units'"),
        ({"training": {"epoch": 2}}, ValueError, r"unknown key 'epoch' in training; allowed keys: .*'epochs'"),
        ({"splits": [{"family": "LOCO", "fold": 2}]}, ValueError, r"unknown key 'fold' in splits\[0\]; allowed keys"),
        (
            {"methods": {"cal": {"attack_step": 2}}},
            ValueError,
            r"unknown key 'attack_step' in methods.cal; allowed keys: .*'attack_steps'",
        ),
        (
            {"methods": {"x": {"kind": "adversarial"}}},
            ValueError,
            r"methods.x.kind must be one of \['erm', 'cal'\], got 'adversarial'",
        ),
        ({"methods": {"x": {}}}, ValueError, r"methods.x needs `kind`"),
        ({"methods": {"x": {"preset": "sal"}}}, ValueError, r"methods.x.preset must be one of"),
        ({"methods": {"cal": {"kind": "erm"}}}, ValueError, r"contradicts its preset 'cal'"),
        ({"methods": {"erm": {"attack_steps": 2}}}, ValueError, r"kind 'erm' but sets CAL options \['attack_steps'\]"),
        ({"methods": {"cal": {"alpha": 2.0}}}, ValueError, r"methods.cal: alpha must lie in \[0, 1\)"),
        ({"methods": {"cal": {"attack_steps": 1.5}}}, TypeError, r"methods.cal: attack_steps must be an int"),
        ({"methods": ["erm", "sal"]}, ValueError, r"'sal' is not a preset"),
        ({"methods": {}}, ValueError, r"methods must name at least one method"),
        ({"methods": {"a b": {"kind": "erm"}}}, ValueError, r"method name must match"),
        ({"seeds": []}, ValueError, r"seeds must be a non-empty list"),
        ({"seeds": [0, 0]}, ValueError, r"seeds lists a seed twice"),
        ({"seeds": [-1]}, ValueError, r"seeds entries must be >= 0, got -1"),
        ({"seeds": "0"}, TypeError, r"seeds must be a list of ints"),
        ({"splits": []}, ValueError, r"splits must list at least one split family"),
        ({"splits": [{"family": "LOCO"}]}, ValueError, r"splits\[0\] \(LOCO\) needs `folds`"),
        ({"splits": [{"family": "random", "folds": ["a"]}]}, ValueError, r"random split keys are their seeds"),
        (
            {"splits": [{"family": "LOCO", "folds": 2, "test_fraction": 0.2}]},
            ValueError,
            r"test_fraction applies to family 'random' only",
        ),
        (
            {"splits": [{"family": "random", "folds": 1, "val_fraction": 0.5, "test_fraction": 0.5}]},
            ValueError,
            r"must be < 1",
        ),
        (
            {"splits": [{"family": "property_range", "folds": 2}]},
            ValueError,
            r"splits\[0\].folds of family 'property_range' must list its keys",
        ),
        (
            {"splits": [{"family": "property_range", "folds": ["up"]}]},
            ValueError,
            r"are sides 'top' / 'bottom', got 'up'",
        ),
        (
            {"splits": [{"family": "property_range", "folds": ["top"], "q": 1.5}]},
            ValueError,
            r"splits\[0\].q must lie in",
        ),
        ({"splits": [{"family": "chemistry", "folds": ["Xx"]}]}, ValueError, r"element symbols such as 'O', got 'Xx'"),
        (
            {"splits": [{"family": "cluster", "folds": 4, "n_clusters": 3}]},
            ValueError,
            r"cluster labels 0 .. 2 \(n_clusters = 3\), got '3'",
        ),
        (
            {"splits": [{"family": "LOCO", "folds": 2, "q": 0.2}]},
            ValueError,
            r"q applies to family 'property_range' only",
        ),
        (
            {"splits": [{"family": "chemistry", "folds": ["O"], "n_clusters": 4}]},
            ValueError,
            r"n_clusters applies to family 'cluster' only",
        ),
        ({"training": {"epochs": 0}}, ValueError, r"training.epochs must be >= 1, got 0"),
        (
            {"training": {"select": "best"}},
            ValueError,
            r"training.select must be one of \['best_val', 'last'\], got 'best'",
        ),
        ({"training": {"max_train": "400"}}, TypeError, r"training.max_train must be an int or absent, got str"),
        (
            {"model": {"family": "SchNet"}},
            ValueError,
            r"model.family must be one of \['M3GNet', 'MEGNet', 'TensorNet'\]",
        ),
        (
            {"model": {"pretrained": "M3GNet-PES-MatPES-PBE-2025.2", "units": 64}},
            ValueError,
            r"model.pretrained = 'M3GNet-PES-MatPES-PBE-2025.2' sets the architecture; "
            r"leave out model keys \['units'\]",
        ),
        ({"model": {"freeze_encoder": False}}, ValueError, r"model.freeze_encoder needs model.pretrained"),
        (
            {"model": {"pretrained": "x", "freeze_encoder": "yes"}},
            TypeError,
            r"model.freeze_encoder must be true or false, got str 'yes'",
        ),
        (
            {"dataset": "matbench_dielectrics"},
            ValueError,
            r"unknown dataset 'matbench_dielectrics'; known datasets: .*matbench_dielectric",
        ),
    ],
)
def test_config_errors(change, exc, match):
    with pytest.raises(exc, match=match):
        config_from_dict(_base_config(**change))


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "c.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match=r"must end in .toml, .yaml or .yml"):
        load_config(bad)
    broken = tmp_path / "b.toml"
    broken.write_text("dataset = \n")
    with pytest.raises(ValueError, match=r"b.toml: invalid TOML"):
        load_config(broken)


# ----------------------------------------------------------------------------- tiny dataset on disk


def _write_gz(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(obj, fh)


def tiny_dataset(tmp_path_factory):
    """A 20-structure dataset with one OOD family (2 folds) in the shared layout, registered under DATASET while
    the generator is open; the body of the module-scoped ``tiny_data`` fixture in conftest.py."""
    root = tmp_path_factory.mktemp("tinydata")
    structures, targets = b.property_structures(20, seed=1)
    records = [
        {"id": i, "target": y, "nsites": len(s), "structure": s.as_dict()}
        for i, (s, y) in enumerate(zip(structures, targets, strict=True))
    ]
    folds = {
        "train": {"0": list(range(0, 12)), "1": list(range(8, 20))},
        "val": {"0": [12, 13, 14], "1": [5, 6, 7]},
        "test": {"0": [15, 16, 17, 18, 19], "1": [0, 1, 2, 3, 4]},
    }
    register_tiny_dataset(root, DATASET, records, folds)
    yield root
    unregister_dataset(DATASET)


def register_tiny_dataset(root: Path, name: str, records: list[dict], loco_folds: dict) -> None:
    """Write ``records`` and one LOCO family (``{"train"|"val"|"test": {fold key: ids}}``) in the shared layout
    under ``root / name`` and register the dataset as ``name`` (target field ``target``, eV/atom)."""
    _write_gz(root / name / f"{name}.json.gz", {"meta": {}, "data": records})
    _write_gz(
        root / name / f"{name}_ood_folds.json.gz",
        {"meta": {"n_entries": len(records)}, "splits": {f"OFM_{name}_LOCO_target_clusters50": loco_folds}},
    )
    register_dataset(
        DatasetInfo(
            name=name,
            file=DataFile(f"{name}/{name}.json.gz"),
            target="target",
            id_field="id",
            units={"target": "eV/atom"},
            ood_folds=DataFile(f"{name}/{name}_ood_folds.json.gz"),
        ),
        overwrite=True,
    )


def _tiny_config(data_root: Path, out: Path, **over) -> dict:
    cfg = {
        "name": "tiny",
        "dataset": DATASET,
        "data_dir": str(data_root),
        "cache_dir": str(out / "cache"),
        "output_dir": str(out / "results"),
        "seeds": [0],
        "model": {"family": "M3GNet", "units": 8, "nblocks": 1, "cutoff": b.CUTOFF, "threebody_cutoff": 3.0,
                  "max_n": 2, "max_l": 2},
        "training": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "max_train": 10, "max_atoms": 16, "accelerator": "cpu"},
        "splits": [{"family": "LOCO", "folds": [0]}],
        "methods": {"erm": {}, "cal": {"warmup_epochs": 0, "adversarial_batches": 1, "mc_samples": 2}},
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = config_from_dict(_tiny_config(tiny_data, out))
    paths = run_benchmark(cfg)
    return cfg, paths, out


def test_plan_runs_checks_families_and_folds(tiny_data, tmp_path):
    cfg = _tiny_config(tiny_data, tmp_path, seeds=[0, 1], splits=[{"family": "LOCO", "folds": 2}])
    specs = plan_runs(cfg)
    assert [(s.split, s.fold, s.seed, s.method) for s in specs][:3] == [
        ("LOCO", "0", 0, "erm"), ("LOCO", "0", 0, "cal"), ("LOCO", "0", 1, "erm")
    ]
    assert len(specs) == 2 * 2 * 2 and specs[0].filename == "erm__LOCO__0__0.json"
    with pytest.raises(ValueError, match=r"unknown family 'LOCOO' for dataset .*; available: \['LOCO'\]"):
        plan_runs(_tiny_config(tiny_data, tmp_path, splits=[{"family": "LOCOO", "folds": 1}]))
    with pytest.raises(ValueError, match=r"unknown fold_key '7' for family 'LOCO'; available: \['0', '1'\]"):
        plan_runs(_tiny_config(tiny_data, tmp_path, splits=[{"family": "LOCO", "folds": [0, 7]}]))
    with pytest.raises(ValueError, match=r"asks for 3 folds but the file has 2"):
        plan_runs(_tiny_config(tiny_data, tmp_path, splits=[{"family": "LOCO", "folds": 3}]))


def test_run_one_rejects_a_bad_fold_before_loading_structures(tiny_data, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the structures were loaded before the fold key was checked")

    monkeypatch.setattr("matgl_cal.datasets.load_dataset", boom)
    cfg = _tiny_config(tiny_data, tmp_path)
    with pytest.raises(ValueError, match=r"unknown fold_key '7' for family 'LOCO'; available: \['0', '1'\]"):
        run_one(cfg, "erm", "LOCO", 7, 0)
    with pytest.raises(ValueError, match=r"fold of the random split is its seed"):
        run_one(_tiny_config(tiny_data, tmp_path, splits=[{"family": "random", "folds": 1}]), "erm", "random", "x", 0)


def test_end_to_end_records(tiny_run):
    cfg, paths, out = tiny_run
    assert [p.name for p in paths] == ["erm__LOCO__0__0.json", "cal__LOCO__0__0.json"]
    assert not (Path.cwd() / "benchmarks").exists()  # nothing written to the cwd
    recs = {p.name.split("__")[0]: json.loads(p.read_text()) for p in paths}
    for name, r in recs.items():
        assert r["method"] == name and r["split"] == "LOCO" and r["fold"] == "0" and r["seed"] == 0
        assert r["n_train"] == 10 and r["n_val"] == 3 and r["n_test"] == 5
        for part in ("train", "val", "test"):
            assert math.isfinite(r["metrics"][part]["mae"]) and r["metrics"][part]["rmse"] >= r["metrics"][part]["mae"]
        assert r["test_predictions"]["ids"] == [15, 16, 17, 18, 19] and len(r["test_predictions"]["y_pred"]) == 5
        assert r["selection"] == "best_val" and r["selected_epoch"] == 0 and len(r["val_mae_history"]) == 1
        assert r["optimizer_steps"]["erm"] == 3  # 10 training structures, batch 4, 1 epoch
        assert r["ood_score"] is not None and r["wall_seconds"] > 0 and r["device"]
        assert r["cpu_capability"] in {"DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512", "SVE256"}
        assert r["ood_score_readout"] > 0  # the same diagnostic in the trained model's readout space
        assert r["units"] == "eV/atom" and r["config"]["name"] == "tiny"
    assert recs["erm"]["cal"] is None and recs["erm"]["optimizer_steps"]["adversarial"] == 0
    cal = recs["cal"]
    assert cal["optimizer_steps"]["adversarial"] == 1 and cal["optimizer_steps"]["total"] == 4
    assert set(cal["cal"]) >= {"cost_min", "cost_mean", "cost_max", "cost_frozen", "gamma"}
    [last] = cal["cal"]["cost_history"]  # one epoch with cost updates: its end-of-epoch statistics
    assert last["epoch"] == 0.0 and last["gamma"] == cal["cal"]["gamma"] and last["cost_min"] == cal["cal"]["cost_min"]
    assert 0 < last["price_min"] <= last["price_max"]
    assert cal["method_kwargs"]["hardness"] == "mc_dropout"
    # the same seed gives the same training-set standardisation and different methods the same data
    assert cal["data_mean"] == recs["erm"]["data_mean"]
    assert cal["test_predictions"]["y_true"] == recs["erm"]["test_predictions"]["y_true"]


def test_captured_readout_is_what_the_final_layer_maps_to_the_prediction():
    import torch

    torch.manual_seed(0)
    model = b.tiny_model("M3GNet").eval()
    ds = b.property_dataset(5)
    loader, _ = b.loaders(ds, 5, shuffle=False)
    g, lat, state, *_ = next(iter(loader))
    from matgl.utils.training import ModelLightningModule

    module = ModelLightningModule(model=model, data_mean=0.0, data_std=1.0).eval()  # as the runner predicts
    with torch.no_grad(), runner_mod._capturing_readout(model) as captured:
        out = module(g=g, lat=lat, state_attr=state)
    assert len(captured) == 1 and captured[0].shape[0] == 5  # one row per structure
    with torch.no_grad():
        again = model.final_layer(captured[0].to(torch.float32))
    torch.testing.assert_close(again.reshape(-1), out.reshape(-1))
    assert runner_mod._readout_ood_score(None, captured[0].numpy()) is None


def test_pretrained_keys_stay_out_of_old_fingerprints():
    plain = config_from_dict(_base_config())
    assert "pretrained" not in plain.as_dict()["model"]
    frozen = config_from_dict(_base_config(model={"pretrained": "some-pes"}))
    assert frozen.as_dict()["model"]["pretrained"] == "some-pes" and frozen.model.freeze_encoder is True
    fp = runner_mod._fingerprint
    assert fp(plain, plain.method("erm"), plain.split("LOCO")) != fp(frozen, frozen.method("erm"), frozen.split("LOCO"))


def test_pretrained_frozen_encoder_run(tiny_data, tmp_path, monkeypatch):
    import torch
    from matgl.apps.pes import Potential
    from matgl.config import DEFAULT_ELEMENTS

    torch.manual_seed(0)
    pes = Potential(model=b.tiny_m3gnet(DEFAULT_ELEMENTS, intensive=False, basis=2))
    pes.save(tmp_path / "models" / "tiny-pes")
    monkeypatch.setenv("MATGL_CAL_MODELS", str(tmp_path / "models"))
    built = []
    build = runner_mod._build_model
    monkeypatch.setattr(runner_mod, "_build_model", lambda cfg: built.append(build(cfg)) or built[-1])
    cfg = _tiny_config(tiny_data, tmp_path, model={"pretrained": "tiny-pes", "cutoff": b.CUTOFF})
    cfg["training"]["epochs"] = 2
    rec = run_one(cfg, "cal", "LOCO", 0, 0)
    assert rec["config"]["model"]["pretrained"] == "tiny-pes" and math.isfinite(rec["metrics"]["test"]["mae"])
    assert rec["optimizer_steps"]["adversarial"] >= 1
    # the encoder did not move, the head did
    before, after = pes.model.state_dict(), built[0].state_dict()
    encoder = [k for k in before if not k.startswith("final_layer")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    with pytest.raises(ValueError, match=r"model.cutoff must equal the cutoff of model.pretrained = 'tiny-pes'"):
        run_one(_tiny_config(tiny_data, tmp_path, model={"pretrained": "tiny-pes", "cutoff": 4.5}), "erm", "LOCO", 0, 0)


def test_encode_once_run_matches_the_full_forward_and_caches_features(tiny_data, tmp_path, monkeypatch):
    import torch
    from matgl.apps.pes import Potential
    from matgl.config import DEFAULT_ELEMENTS

    torch.manual_seed(0)
    Potential(model=b.tiny_m3gnet(DEFAULT_ELEMENTS, intensive=False, basis=2)).save(tmp_path / "models" / "tiny-pes")
    monkeypatch.setenv("MATGL_CAL_MODELS", str(tmp_path / "models"))
    frozen = {"pretrained": "tiny-pes", "cutoff": b.CUTOFF}
    recs = {}
    for label, model in (("full", frozen), ("fast", dict(frozen, encode_once=True))):
        cfg = _tiny_config(tiny_data, tmp_path / label, model=model)
        cfg["training"]["epochs"] = 2
        recs[label] = {m: run_one(cfg, m, "LOCO", 0, 0) for m in ("erm", "cal")}
    for m in ("erm", "cal"):
        full, fast = recs["full"][m], recs["fast"][m]
        assert fast["config"]["model"]["encode_once"] is True and "encode_once" not in full["config"]["model"]
        assert fast["fingerprint"] != full["fingerprint"]
        assert fast["optimizer_steps"] == full["optimizer_steps"]
        np.testing.assert_allclose(
            fast["test_predictions"]["y_pred"], full["test_predictions"]["y_pred"], rtol=1e-4, atol=1e-5
        )
    cached = list((tmp_path / "fast" / "cache" / "encoded").glob("*.pt"))
    assert len(cached) == 1
    # a second process reads the stored features instead of running the encoder
    monkeypatch.setattr("matgl_cal.encoded.encode_graphs", lambda *a, **k: pytest.fail("encoded twice"))
    cfg = _tiny_config(tiny_data, tmp_path / "fast", model=dict(frozen, encode_once=True), seeds=[1])
    cfg["training"]["epochs"] = 2
    assert math.isfinite(run_one(cfg, "erm", "LOCO", 0, 1)["metrics"]["test"]["mae"])


def test_encode_once_config_errors(tiny_data, tmp_path):
    frozen = {"pretrained": "p", "cutoff": b.CUTOFF}
    with pytest.raises(ValueError, match=r"model.encode_once needs a frozen pretrained encoder"):
        config_from_dict(_tiny_config(tiny_data, tmp_path, model={"encode_once": True}))
    with pytest.raises(ValueError, match=r"model.encode_once needs a frozen pretrained encoder"):
        config_from_dict(_tiny_config(tiny_data, tmp_path, model=dict(frozen, freeze_encoder=False, encode_once=True)))
    with pytest.raises(TypeError, match=r"model.encode_once must be true or false, got str 'yes'"):
        config_from_dict(_tiny_config(tiny_data, tmp_path, model=dict(frozen, encode_once="yes")))
    methods = {"erm": {}, "strained": {"kind": "cal", "space": "strain"}}
    with pytest.raises(ValueError, match=r"only the 'readout' space.*strained \(space 'strain'\)"):
        config_from_dict(_tiny_config(tiny_data, tmp_path, model=dict(frozen, encode_once=True), methods=methods))


@pytest.mark.parametrize("family", ["MEGNet", "TensorNet"])
def test_other_model_families_run(tiny_data, tmp_path, family):
    model = {"family": family, "units": 8, "nblocks": 1, "cutoff": b.CUTOFF}
    cfg = _tiny_config(tiny_data, tmp_path, model=model)
    rec = run_one(cfg, "cal", "LOCO", 0, 0)
    assert rec["config"]["model"]["family"] == family
    assert rec["optimizer_steps"]["adversarial"] == 1 and math.isfinite(rec["metrics"]["test"]["mae"])
    assert set(rec["cal"]) >= {"cost_min", "cost_max"}


def test_resume_skips_existing_records(tiny_run, monkeypatch):
    cfg, paths, out = tiny_run
    mtimes = [p.stat().st_mtime_ns for p in paths]

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner_mod, "_train_and_record", boom)
    monkeypatch.setattr("matgl_cal.datasets.load_dataset", boom)  # nothing left to run: no structures loaded
    assert run_benchmark(cfg) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    # changed settings for the same record file: refuse instead of silently mixing results
    changed = _changed(cfg)
    with pytest.raises(ValueError, match=r"was made with different settings"):
        run_benchmark(changed)


def test_split_maker_families(tiny_data, tmp_path):
    """property_range / chemistry / cluster splits from the config, on any dataset, without a fold file."""
    from matgl_cal.benchmark._runner import _Data

    raw = _tiny_config(
        tiny_data,
        tmp_path,
        splits=[
            {"family": "property_range", "folds": ["top", "bottom"], "q": 0.25, "val_fraction": 0.2},
            {"family": "chemistry", "folds": ["O"], "val_fraction": 0.2},
            {"family": "cluster", "folds": 2, "n_clusters": 2, "val_fraction": 0.2},
        ],
        training={"epochs": 1, "batch_size": 4, "lr": 1e-3, "accelerator": "cpu"},
    )
    cfg = config_from_dict(raw)
    assert [(s.split, s.fold) for s in plan_runs(cfg)][::2] == [
        ("property_range", "top"), ("property_range", "bottom"), ("chemistry", "O"), ("cluster", "0"), ("cluster", "1")
    ]
    data = _Data(cfg)
    y = data.dataset.targets
    seen_test = []
    for split in cfg.splits:
        for fold in split.folds:
            parts = data.indices(split, fold)
            every = np.concatenate(list(parts.values()))
            assert len(every) == len(set(every.tolist())) == 20  # disjoint and covering
            seen_test.append(set(parts["test"].tolist()))
            if split.family == "property_range":
                assert len(parts["test"]) == 5  # round(0.25 * 20)
                rest = np.concatenate([parts["train"], parts["val"]])
                if fold == "top":
                    assert y[parts["test"]].min() >= y[rest].max()
                else:
                    assert y[parts["test"]].max() <= y[rest].min()
            elif split.family == "chemistry":
                has_o = ["O" in {e.symbol for e in s.composition.elements} for s in data.dataset.structures]
                assert sorted(parts["test"].tolist()) == [i for i, h in enumerate(has_o) if h]
            assert parts["val"].size == round(0.2 * (20 - len(parts["test"])))
            assert np.array_equal(data.indices(split, fold)["val"], parts["val"])  # the same split every time
    assert seen_test[3] | seen_test[4] == set(range(20)) and not seen_test[3] & seen_test[4]  # the 2 clusters
    # the maker settings enter the fingerprint (other q: other record), the file families' do not change
    fp = runner_mod._fingerprint(cfg, cfg.method("erm"), cfg.split("property_range"))
    other = config_from_dict({**raw, "splits": [{**raw["splits"][0], "q": 0.3}]})
    assert runner_mod._fingerprint(other, other.method("erm"), other.split("property_range")) != fp
    rec = run_one(cfg, "erm", "property_range", "top", 0)
    assert rec["n_test"] == 5 and rec["split"] == "property_range" and rec["fold"] == "top"
    assert rec["config"]["splits"][0]["q"] == 0.25
    with pytest.raises(ValueError, match=r"are sides 'top' / 'bottom', got 'middle'"):
        run_one(cfg, "erm", "property_range", "middle", 0)


def test_nested_property_range_runs_on_the_training_part_only(tiny_data, tmp_path):
    """``nested = true``: the real test set is in no part; the fingerprint changes only when nested is set."""
    from matgl_cal.benchmark._runner import _Data

    split = {"family": "property_range", "folds": ["top"], "q": 0.25, "val_fraction": 0.2}
    training = {"epochs": 1, "batch_size": 4, "lr": 1e-3, "accelerator": "cpu"}
    plain_raw = _tiny_config(tiny_data, tmp_path / "plain", splits=[split], training=training)
    nested_raw = _tiny_config(tiny_data, tmp_path / "nested", splits=[{**split, "nested": True}], training=training)
    plain, nested = config_from_dict(plain_raw), config_from_dict(nested_raw)
    assert nested.split("property_range").nested and not plain.split("property_range").nested
    real = _Data(plain).indices(plain.split("property_range"), "top")
    inner = _Data(nested).indices(nested.split("property_range"), "top")
    every = np.concatenate(list(inner.values()))
    assert len(every) == len(set(every.tolist())) == 15  # 20 minus the 5 of the real test set
    assert not set(every.tolist()) & set(real["test"].tolist())
    assert len(inner["test"]) == 4  # round(0.25 * 15)
    fp_plain = runner_mod._fingerprint(plain, plain.method("erm"), plain.split("property_range"))
    fp_nested = runner_mod._fingerprint(nested, nested.method("erm"), nested.split("property_range"))
    assert fp_plain != fp_nested
    explicit_off = config_from_dict({**plain_raw, "splits": [{**split, "nested": False}]})
    fp_off = runner_mod._fingerprint(explicit_off, explicit_off.method("erm"), explicit_off.split("property_range"))
    assert fp_off == fp_plain
    rec = run_one(nested, "erm", "property_range", "top", 0)
    assert rec["n_test"] == 4 and rec["config"]["splits"][0]["nested"] is True
    with pytest.raises(ValueError, match=r"splits\[0\].nested applies to family 'property_range' only"):
        config_from_dict({**plain_raw, "splits": [{"family": "chemistry", "folds": ["O"], "nested": True}]})
    with pytest.raises(TypeError, match=r"splits\[0\].nested must be true or false, got str 'yes'"):
        config_from_dict({**plain_raw, "splits": [{**split, "nested": "yes"}]})


def test_num_workers_changes_nothing_but_collation(tiny_data, tiny_run, tmp_path):
    cfg_ref, ref_paths, _ = tiny_run
    raw = _tiny_config(tiny_data, tmp_path)
    raw["training"] = {**raw["training"], "num_workers": 1}
    cfg = config_from_dict(raw)
    assert cfg.training.num_workers == 1 and cfg_ref.training.num_workers == 0
    for m in ("erm", "cal"):  # same fingerprint: old records stay valid
        assert runner_mod._fingerprint(cfg, cfg.method(m), cfg.split("LOCO")) == runner_mod._fingerprint(
            cfg_ref, cfg_ref.method(m), cfg_ref.split("LOCO")
        )
    paths = run_benchmark(cfg)
    for p, ref in zip(paths, ref_paths, strict=True):  # batches collated in a worker: the same run
        got, want = json.loads(p.read_text()), json.loads(ref.read_text())
        assert got["metrics"] == want["metrics"] and got["test_predictions"] == want["test_predictions"]
    with pytest.raises(ValueError, match=r"training.num_workers must be >= 0, got -1"):
        config_from_dict({**raw, "training": {**raw["training"], "num_workers": -1}})


def test_parse_shard():
    assert parse_shard(None) is None
    assert parse_shard("1/3") == (1, 3) and parse_shard((0, 1)) == (0, 1)
    for bad in ["3/3", "1", "a/2", "-1/2", "0/0", "1/2/3", (2, 2), (True, 2), (0,), 5]:
        with pytest.raises(ValueError, match="shard must"):
            parse_shard(bad)


def test_shards_partition_the_plan_into_whole_groups(tiny_data, tmp_path):
    cfg = config_from_dict(_tiny_config(tiny_data, tmp_path, seeds=[0, 1], splits=[{"family": "LOCO", "folds": 2}]))
    specs = plan_runs(cfg)
    shards = [runner_mod._shard_of(specs, (i, 3)) for i in range(3)]
    assert sorted((s for sh in shards for s in sh), key=specs.index) == specs  # every run exactly once
    assert [len(sh) for sh in shards] == [4, 2, 2]  # 4 (fold, seed) groups x 2 methods, dealt round-robin
    for sh in shards:
        groups = {(s.split, s.fold, s.seed) for s in sh}
        assert {(s.split, s.fold, s.seed, s.method) for s in sh} == {
            (*g, m) for g in groups for m in ("erm", "cal")
        }  # all methods of a group in one shard: an interrupted shard leaves complete pairs
    assert runner_mod._shard_of(specs, None) == specs and runner_mod._shard_of(specs, (0, 1)) == specs
    assert plan_runs(cfg, shard="1/3") == shards[1]


def test_prepared_shards_reproduce_the_unsharded_run(tiny_data, tiny_run, tmp_path, monkeypatch, capsys):
    _, ref_paths, _ = tiny_run
    ref = {p.name: json.loads(p.read_text()) for p in ref_paths}
    raw = _tiny_config(tiny_data, tmp_path, splits=[{"family": "LOCO", "folds": [0, 1]}])
    cfg = config_from_dict(raw)
    assert prepare_benchmark(cfg) == 20  # folds 0 and 1 together use every structure
    import matgl_cal.datasets._graph_cache as cache_mod

    def no_conversion(*args, **kwargs):
        raise AssertionError("a shard converted graphs that prepare_benchmark had cached")

    monkeypatch.setattr(cache_mod, "_convert", no_conversion)
    toml = tmp_path / "tiny.toml"
    toml.write_text(_as_toml(raw))
    assert main(["benchmark", str(toml), "--shard", "1/2"]) == 0  # fold 1, through the CLI
    assert "--command 'mgl-cal benchmark" in capsys.readouterr().out  # the report call to make, with its --command
    assert not list(Path(raw["output_dir"]).glob("RESULTS_*.md"))  # the report waits for all shards
    paths = run_benchmark(cfg, shard="0/2")  # fold 0
    assert [p.name for p in paths] == ["erm__LOCO__0__0.json", "cal__LOCO__0__0.json"]
    records = sorted(p.name for p in (Path(raw["output_dir"]) / "records").iterdir())
    assert records == sorted(
        ["erm__LOCO__0__0.json", "cal__LOCO__0__0.json", "erm__LOCO__1__0.json", "cal__LOCO__1__0.json"])
    for p in paths:  # the same runs as the unsharded benchmark of fold 0, to the last digit
        got = json.loads(p.read_text())
        assert got["metrics"] == ref[p.name]["metrics"]
        assert got["test_predictions"] == ref[p.name]["test_predictions"]
    assert main(["benchmark", str(toml), "--shard", "2/2"]) == 2
    assert "shard must satisfy 0 <= I < N" in capsys.readouterr().err
    assert main(["benchmark", str(toml), "--dry-run", "--shard", "1/2"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and all("fold='1'" in line for line in listed)


def _as_toml(raw: dict) -> str:
    def value(v):
        return json.dumps(v)  # strings, numbers and lists of them read the same in TOML

    lines = [f"{k} = {value(raw[k])}" for k in ("name", "dataset", "data_dir", "cache_dir", "output_dir", "seeds")]
    for table in ("model", "training"):
        lines += [f"[{table}]"] + [f"{k} = {value(v)}" for k, v in raw[table].items()]
    for split in raw["splits"]:
        lines += ["[[splits]]"] + [f"{k} = {value(v)}" for k, v in split.items()]
    for name, kwargs in raw["methods"].items():
        lines += [f"[methods.{name}]"] + [f"{k} = {value(v)}" for k, v in kwargs.items()]
    return "\n".join(lines) + "\n"


def _changed(cfg):
    d = cfg.as_dict()
    raw = {
        "name": d["name"], "dataset": d["dataset"], "data_dir": d["data_dir"], "cache_dir": d["cache_dir"],
        "output_dir": d["output_dir"], "seeds": d["seeds"], "model": d["model"],
        "training": {**d["training"], "epochs": 2},
        "splits": [{"family": "LOCO", "folds": [0]}],
        "methods": {"erm": {}},
    }
    return config_from_dict(raw)


def test_report_from_tiny_run(tiny_run):
    cfg, paths, out = tiny_run
    md = make_report(Path(cfg.output_dir) / "records", out / "report")
    text = md.read_text()
    assert md.name == "RESULTS_tiny.md"
    assert "| erm |" in text and "| cal |" in text and "run_benchmark" in text
    assert (out / "report" / "tiny_bar_LOCO.png").stat().st_size > 1000
    assert (out / "report" / "tiny_parity_LOCO_0.png").stat().st_size > 1000
    assert "Model M3GNet (units 8, nblocks 1, cutoff 4.0, three-body cutoff 3.0)" in text
    # families without three-body terms do not report a three-body cutoff
    records = out / "tensornet_records"
    records.mkdir()
    for path in paths:
        rec = json.loads(path.read_text())
        rec["config"]["model"]["family"] = "TensorNet"
        (records / path.name).write_text(json.dumps(rec))
    assert "Model TensorNet (units 8, nblocks 1, cutoff 4.0);" in make_report(records, out / "tn").read_text()


# ----------------------------------------------------------------------------- report from synthetic records


def _rec(method, split, fold, seed, mae, kind="erm"):
    adv = 10 if kind == "cal" else 0
    cal = {"cost_min": 90.0, "cost_mean": 100.0, "cost_max": 110.0, "cost_frozen": 0.0, "gamma": 0.011}
    cal = cal if kind == "cal" else None
    return {
        "benchmark": "synth", "method": method, "method_kind": kind, "split": split, "fold": str(fold), "seed": seed,
        "dataset": "d", "target": "t", "units": "eV",
        "metrics": {"test": {"mae": mae, "rmse": mae * 1.5, "n": 3}},
        "optimizer_steps": {"erm": 100, "adversarial": adv, "total": 100 + adv},
        "cal": cal,
        "ood_score": 2.0, "wall_seconds": 10.0, "device": "cpu",
        "test_predictions": {"ids": [0, 1, 2], "y_true": [1.0, 2.0, 3.0], "y_pred": [1.1, 2.1, 2.9]},
        "config": {"source": "benchmarks/configs/synth.toml"},
    }


def _synthetic_records():
    recs = []
    for k, (fold, seed) in enumerate([(f, s) for f in range(3) for s in range(2)]):
        erm = 1.0 + 0.1 * k
        recs += [_rec("erm", "LOCO", fold, seed, erm), _rec("cal", "LOCO", fold, seed, 0.9 * erm, "cal")]
    recs += [_rec("erm", "SparseYcluster", 0, 0, 1.0), _rec("cal", "SparseYcluster", 0, 0, 1.1, "cal")]
    recs += [_rec("erm", "SparseYcluster", 1, 0, 2.0), _rec("cal", "SparseYcluster", 1, 0, 2.4, "cal")]
    recs += [_rec("erm", "random", 0, 0, 0.5), _rec("cal", "random", 0, 0, 0.55, "cal")]
    return recs


def _write_records(folder, records):
    """Write records as a runner would (``<method>__<split>__<fold>__<seed>.json`` in ``folder``, created); returns
    ``folder``."""
    folder.mkdir(parents=True)
    for r in records:
        (folder / f"{r['method']}__{r['split']}__{r['fold']}__{r['seed']}.json").write_text(json.dumps(r))
    return folder


def test_paired_test_choice():
    p, name = paired_test([0.9, 1.0, 1.1, 1.2, 1.3, 1.4], [1, 1.1, 1.2, 1.3, 1.4, 1.5])
    assert name == "wilcoxon" and p == pytest.approx(stats.wilcoxon([-0.1] * 6).pvalue) and p < 0.05
    p, name = paired_test([1.1, 2.4], [1.0, 2.0])
    assert name == "paired t" and p == pytest.approx(stats.ttest_rel([1.1, 2.4], [1.0, 2.0]).pvalue)
    assert paired_test([1.0], [1.0])[0] != paired_test([1.0], [1.0])[0]  # NaN for one pair
    assert paired_test([1.0, 2.0], [1.0, 2.0])[0] == 1.0
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0], [1.0, 2.0])


def test_paired_change_interval_resamples_whole_groups():
    import doctest

    # every pair 10 % lower: the interval is that point
    low, high = paired_change_interval([0.9] * 6, [1.0] * 6, ["a", "a", "b", "b", "c", "c"])
    assert low == pytest.approx(-0.1) and high == pytest.approx(-0.1)
    # two folds at -10 % and +10 %: a resample is all one fold with probability 1/4, so the 95 % bounds are +-10 %
    low, high = paired_change_interval([0.9, 0.9, 1.1, 1.1], [1.0] * 4, ["f0", "f0", "f1", "f1"])
    assert (low, high) == (pytest.approx(-0.1), pytest.approx(0.1))
    # seeds of one fold move together: resampling folds gives a wider interval than treating pairs as independent
    rng = np.random.default_rng(1)
    fold_effect = np.repeat(rng.normal(0.0, 0.05, size=8), 3)
    a, b = 1.0 + fold_effect + rng.normal(0.0, 0.005, size=24), np.ones(24)
    folds = np.repeat(np.arange(8), 3).tolist()
    grouped = paired_change_interval(a, b, folds)
    independent = paired_change_interval(a, b, list(range(24)))
    assert grouped[0] <= np.mean(a - 1.0) <= grouped[1]
    assert grouped[1] - grouped[0] > 1.3 * (independent[1] - independent[0])
    assert paired_change_interval(a, b, folds, seed=5) != grouped  # seeded, not fixed
    assert paired_change_interval(a, b, folds) == grouped
    assert all(math.isnan(v) for v in paired_change_interval([1.0, 2.0], [1.0, 1.0], ["x", "x"]))
    for kwargs, message in [
        ({"a": [1.0], "b": [1.0, 1.0], "groups": ["x", "y"]}, "same length"),
        ({"a": [1.0, 1.0], "b": [1.0, 0.0], "groups": ["x", "y"]}, r"b \(the baseline\) must be > 0"),
        ({"a": [1.0, 1.0], "b": [1.0, 1.0], "groups": ["x", "y"], "level": 1.0}, r"level must be in \(0, 1\)"),
        ({"a": [1.0, 1.0], "b": [1.0, 1.0], "groups": ["x", "y"], "n_boot": 10}, "n_boot must be an int >= 100"),
    ]:
        with pytest.raises(ValueError, match=message):
            paired_change_interval(**kwargs)
    globs = {"paired_change_interval": paired_change_interval}
    [example] = doctest.DocTestFinder().find(paired_change_interval, globs=globs)
    assert doctest.DocTestRunner().run(example).failed == 0


def test_summarize_known_numbers():
    rows = {(r["split"], r["method"]): r for r in summarize(_synthetic_records())}
    loco = rows[("LOCO", "cal")]
    assert loco["n"] == 6 and loco["n_pairs"] == 6 and loco["test"] == "wilcoxon"
    assert loco["rel_change_pct"] == pytest.approx(-10.0)
    assert loco["rel_change_interval_pct"] == (pytest.approx(-10.0), pytest.approx(-10.0))  # -10 % in every pair
    erm_maes = [1.0 + 0.1 * k for k in range(6)]
    assert rows[("LOCO", "erm")]["test_mae_mean"] == pytest.approx(sum(erm_maes) / 6)
    assert loco["test_mae_mean"] == pytest.approx(0.9 * sum(erm_maes) / 6)
    assert loco["p_value"] == pytest.approx(stats.wilcoxon([0.9 * x for x in erm_maes], erm_maes).pvalue)
    sy = rows[("SparseYcluster", "cal")]
    assert sy["test"] == "paired t" and sy["rel_change_pct"] == pytest.approx(15.0)
    assert sy["p_value"] == pytest.approx(stats.ttest_rel([1.1, 2.4], [1.0, 2.0]).pvalue)
    assert sy["id_mae_mean"] == pytest.approx(0.55) and rows[("LOCO", "erm")]["id_mae_mean"] == pytest.approx(0.5)
    assert math.isnan(rows[("LOCO", "erm")]["rel_change_pct"])
    assert loco["steps"] == 110 and loco["cal"]["gamma"] == pytest.approx(0.011)
    assert list(rows)[-1][0] == "random"  # the in-distribution control comes last


def test_report_without_erm_says_where_the_baseline_is(tmp_path):
    rdir = _write_records(tmp_path / "records", [r for r in _synthetic_records() if r["method"] != "erm"])
    text = make_report(rdir, tmp_path / "out").read_text()
    assert "No ERM (baseline) records in this folder" in text and "compare_records.py" in text
    assert "None" not in text and "| method | test MAE | Δ vs ERM |" in text


def test_make_report_synthetic(tmp_path):
    rdir = _write_records(tmp_path / "records", _synthetic_records())
    md = make_report(rdir, tmp_path / "out", commands=["bash benchmarks/run_ood_cpu.sh"])
    text = md.read_text()
    assert md.name == "RESULTS_synth.md"
    assert "bash benchmarks/run_ood_cpu.sh" in text
    assert "### LOCO" in text and "### SparseYcluster" in text and "### random" in text
    assert "| cal | 1.1250 ± 0.1684 | -10.0 % | 0.0312 | wilcoxon (n=6) | -10.0 to -10.0 % | 0.5500 | 6 |" in text
    assert "| erm | 1.2500 ± 0.1871 | — | — | — | — | 0.5000 | 6 |" in text
    # two folds at +10 % and +20 %: a resample is one fold twice with probability 1/2, so the bounds are those
    assert "| cal | 1.7500 ± 0.9192 | +15.0 % | 0.344 | paired t (n=2) | +10.0 to +20.0 % |" in text
    assert "| cal | 0.5500 | +10.0 % | n/a | paired t (n=1) | n/a |" in text
    assert "Wilcoxon signed-rank" in text and "paired t-test" in text
    pngs = ("synth_bar_LOCO.png", "synth_bar_SparseYcluster.png", "synth_bar_random.png", "synth_parity_LOCO_0.png")
    for png in pngs:
        assert (tmp_path / "out" / png).stat().st_size > 1000
    # default commands name the records' config file
    text = make_report(rdir, tmp_path / "out2").read_text()
    assert "run_benchmark('benchmarks/configs/synth.toml')" in text
    # the header describes the model the records were made with: fresh, or a pretrained encoder
    training = {"epochs": 3, "batch_size": 4, "lr": 0.001, "loss": "l1_loss", "select": "best_val"}
    models = {
        "fresh": {"family": "M3GNet", "units": 32, "nblocks": 2, "cutoff": 5.0, "threebody_cutoff": 4.0},
        "frozen": {"pretrained": "M3GNet-PES-MatPES-PBE-2025.2", "freeze_encoder": True, "cutoff": 5.0},
    }
    for label, model in models.items():
        recs = _synthetic_records()
        for r in recs:
            r["config"] = {"source": "benchmarks/configs/synth.toml", "model": model, "training": training}
        rdir = _write_records(tmp_path / f"records_{label}", recs)
        models[label] = make_report(rdir, tmp_path / f"out_{label}").read_text()
    assert "Model M3GNet (units 32, nblocks 2, cutoff 5.0, three-body cutoff 4.0); 3 epochs" in models["fresh"]
    assert (
        "Model: the encoder of `M3GNet-PES-MatPES-PBE-2025.2` (frozen) with a new weighted-atom head, cutoff 5.0; "
        "3 epochs" in models["frozen"]
    )


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_records(tmp_path / "none")
    (tmp_path / "r").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        make_report(tmp_path / "r", tmp_path / "o")
    (tmp_path / "r" / "x.json").write_text(json.dumps(_rec("erm", "LOCO", 0, 0, 1.0)))
    with pytest.raises(ValueError, match=r"baseline 'ermm' has no records; methods with records: \['erm'\]"):
        make_report(tmp_path / "r", tmp_path / "o", baseline="ermm")
    (tmp_path / "r" / "y.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is not a benchmark record"):
        load_records(tmp_path / "r")



def _benchmark_script(name: str):
    """Import ``benchmarks/<name>.py`` (a script directory, not a package) as a module.

    The scripts import their siblings (``from compare_records import ...``), as they do when run, where
    Python puts the script's folder first on ``sys.path``.
    """
    import importlib.util
    import sys

    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compare_records_script_pairs_arms_across_folders(capsys):
    """benchmarks/compare_records.py on committed records reproduces the equal-step numbers of RESULTS.md."""
    mod = _benchmark_script("compare_records")
    res = REPO / "benchmarks" / "results"
    longer = f"{res / 'dielectric_cpu_loco10_erm14' / 'records'}:erm"
    base = f"{res / 'dielectric_cpu_loco10' / 'records'}"
    assert mod.main([longer, f"{base}:erm", f"{base}:cal"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 5
    assert rows[2].startswith("| dielectric_cpu_loco10_erm14:erm vs dielectric_cpu_loco10:erm |")
    assert "| -2.5 % | 0.0047 (wilcoxon, n=30) | 23/30 | " in rows[2]
    assert "| +1.5 % | 0.36 (wilcoxon, n=30) | 11/30 | " in rows[3]
    # the last column resamples the 10 folds with their seeds: one fold at +1 to +34 % makes the interval
    # reach above 0 although 23 of 30 pairs are lower (the seeds of a fold are not independent pairs)
    assert rows[2].endswith("| 23/30 | -6.5 to +1.9 % (10 folds) |")
    with pytest.raises(SystemExit, match=r"no records of method 'nope'"):
        mod.main([longer, f"{base}:nope"])


def test_compare_records_pools_folders_as_one(tmp_path, capsys):
    """``DIR_A,DIR_B:METHOD`` gives the same row as one folder holding both folders' runs; a run in both is an error."""
    mod = _benchmark_script("compare_records")
    whole, first, second = (tmp_path / n for n in ("whole", "first", "second"))
    for r in _synthetic_records():
        name = f"{r['method']}__{r['split']}__{r['fold']}__{r['seed']}.json"
        for folder in (whole, first if r["fold"] in ("0", "1") else second):
            folder.mkdir(exist_ok=True)
            (folder / name).write_text(json.dumps(r))
    assert mod.main(["--split", "LOCO", f"{whole}:cal", f"{whole}:erm"]) == 0
    one = capsys.readouterr().out.splitlines()[2]
    assert mod.main(["--split", "LOCO", f"{first},{second}:cal", f"{first},{second}:erm"]) == 0
    pooled = capsys.readouterr().out.splitlines()[2]
    assert pooled.startswith("| first+second:cal vs first+second:erm |")
    assert pooled.split("|")[2:] == one.split("|")[2:] and "(3 folds)" in pooled and "n=6" in pooled
    assert mod.main(["--split", "LOCO", f"{first}:cal", f"{first}:erm"]) == 0
    assert "n=4" in capsys.readouterr().out  # one folder alone: folds 0-1 only
    with pytest.raises(SystemExit, match=r"in more than one of the folders"):
        mod.main([f"{whole},{first}:cal", f"{whole}:erm"])
    with pytest.raises(SystemExit, match=r"arm must be RECORDS_DIR:METHOD"):
        mod.main([f"{first},:cal", f"{whole}:erm"])


def test_round12_frozen_encoder_rows_reproduce(capsys):
    """The round 12 rows of RESULTS.md come from the committed records: the frozen encoder against training
    from scratch, and CAL against ERM on the frozen encoder."""
    mod = _benchmark_script("compare_records")
    res = REPO / "benchmarks" / "results"
    expected = {
        "dielectric": ("| -10.4 % | 0.00073 (wilcoxon, n=30) | 24/30 | -21.1 to -0.9 % (10 folds) |",
                       "| -1.4 % | 0.25 (wilcoxon, n=30) | 20/30 | -4.9 to +1.5 % (10 folds) |"),
        "log_gvrh": ("| -17.0 % | 0.002 (wilcoxon, n=10) | 10/10 | -27.1 to -8.5 % (10 folds) |",
                     "| +0.8 % | 0.56 (wilcoxon, n=10) | 4/10 | -2.9 to +4.5 % (10 folds) |"),
    }
    for dataset, (encoder_row, cal_row) in expected.items():
        frozen = res / f"{dataset}_cpu_loco10_frozen_e30" / "records"
        scratch = res / f"{dataset}_cpu_loco10_e30" / "records"
        assert mod.main([f"{frozen}:erm", f"{scratch}:erm", f"{frozen}:cal_in_step_every_cluster8"]) == 0
        rows = capsys.readouterr().out.splitlines()
        assert rows[2].endswith(encoder_row), rows[2]
        assert rows[3].startswith(f"| {dataset}_cpu_loco10_frozen_e30:cal_in_step_every_cluster8 vs "
                                  f"{dataset}_cpu_loco10_frozen_e30:erm |")
        assert rows[3].endswith(cal_row), rows[3]


def _family(dataset: str, family: str, *parts: str) -> tuple[str, ...]:
    """Config names of one frozen-encoder family's record folders: ``parts`` are the name suffixes ("", "_more")."""
    return tuple(f"{dataset}_cpu_frozen_full_{family}{part}_e30" for part in parts)


#: Pooled rows of RESULTS.md section 6 (the row's end), each from the committed records of the configs named.
_POOLED_ROWS = {
    # round 24: folds 0-9 x 3 seeds + folds 10-39 x seed 0
    "r24-log_gvrh-sparsex": (_family("log_gvrh", "sparsex", "", "_more"),
                             "| -1.1 % | 0.28 (wilcoxon, n=60) | 38/60 | -4.9 to +2.9 % (40 folds) |"),
    "r24-dielectric-sparsex": (_family("dielectric", "sparsex", "", "_more"),
                               "| +0.5 % | 0.96 (wilcoxon, n=60) | 31/60 | -2.1 to +3.2 % (40 folds) |"),
    "r24-dielectric-sparsey": (_family("dielectric", "sparsey", "", "_more"),
                               "| -1.5 % | 0.29 (wilcoxon, n=60) | 34/60 | -5.2 to +1.5 % (40 folds) |"),
    # round 25: all 50 Omee folds (folds 40-49 x seed 0 added); log_gvrh SparseYcluster on 40 folds
    "r25-log_gvrh-sparsex": (_family("log_gvrh", "sparsex", "", "_more", "_last"),
                             "| -0.6 % | 0.58 (wilcoxon, n=70) | 42/70 | -4.0 to +2.9 % (50 folds) |"),
    "r25-dielectric-sparsex": (_family("dielectric", "sparsex", "", "_more", "_last"),
                               "| +0.1 % | 0.71 (wilcoxon, n=70) | 37/70 | -2.5 to +2.6 % (50 folds) |"),
    "r25-dielectric-sparsey": (_family("dielectric", "sparsey", "", "_more", "_last"),
                               "| -1.6 % | 0.43 (wilcoxon, n=70) | 38/70 | -5.0 to +1.4 % (50 folds) |"),
    "r25-log_gvrh-sparsey": (_family("log_gvrh", "sparsey", "", "_more"),
                             "| -1.3 % | 0.064 (wilcoxon, n=60) | 35/60 | -3.7 to +1.4 % (40 folds) |"),
    # round 25: log_gvrh in distribution with seeds 1-2 added, 10 random splits x 3 seeds (one folder)
    "r25-log_gvrh-random": (_family("log_gvrh", "random", ""),
                            "| -1.1 % | 1.4e-05 (wilcoxon, n=30) | 26/30 | -1.7 to -0.6 % (10 folds) |"),
    # round 26: MEGNet on the sparse families and random splits (one folder each, the `cal` preset against ERM)
    "r26-megnet-dielectric-sparsex": (("dielectric_megnet_cpu_sparsexcluster10",),
                                      "| -2.1 % | 0.28 (wilcoxon, n=30) | 17/30 | -4.8 to +0.1 % (10 folds) |", "cal"),
    "r26-megnet-dielectric-sparsey": (("dielectric_megnet_cpu_sparseycluster10",),
                                      "| -0.4 % | 0.82 (wilcoxon, n=30) | 14/30 | -1.3 to +0.5 % (10 folds) |", "cal"),
    "r26-megnet-dielectric-random": (("dielectric_megnet_cpu_random10",),
                                     "| -0.4 % | 0.0028 (wilcoxon, n=30) | 21/30 | -0.6 to -0.2 % (10 folds) |", "cal"),
    "r26-megnet-log_gvrh-sparsex": (("log_gvrh_megnet_cpu_sparsexcluster10",),
                                    "| +0.4 % | 0.45 (wilcoxon, n=30) | 17/30 | -2.5 to +3.5 % (10 folds) |", "cal"),
    "r26-megnet-log_gvrh-sparsey": (("log_gvrh_megnet_cpu_sparseycluster10",),
                                    "| +1.3 % | 0.49 (wilcoxon, n=30) | 12/30 | -0.5 to +2.9 % (10 folds) |", "cal"),
    "r26-megnet-log_gvrh-random": (("log_gvrh_megnet_cpu_random10",),
                                   "| -0.7 % | 6e-06 (wilcoxon, n=30) | 26/30 | -1.0 to -0.4 % (10 folds) |", "cal"),
    # round 26: log_gvrh prior shift "top" over all 15 seeds (0-4, 5-9, 10-14), and the centred MAE of seeds 10-14
    "r26-log_gvrh-prior-top-15-seeds": (("log_gvrh_cpu_frozen_full_prior_shift_e30",
                                         "log_gvrh_cpu_frozen_full_prior_top_confirm_e30",
                                         "log_gvrh_cpu_frozen_full_prior_top_rank_e30"),
                                        "| -4.9 % | 0.0012 (wilcoxon, n=15) | 12/15 | n/a (1 fold) |",
                                        "cal_in_step_every_cluster8", "--fold", "top"),
    # round 26: perovskites prior shift "top", fresh seeds 5-9: fixed costs against ERM, and over seeds 0-9
    "r26-perovskites-top-fixed-cost": (("perovskites_cpu_frozen_full_prior_top_fixed_cost_confirm_e30",),
                                       "| -14.0 % | 0.0064 (paired t, n=5) | 5/5 | n/a (1 fold) |",
                                       "fixed_cost_in_step_every_cluster8"),
    "r26-perovskites-top-fixed-cost-10-seeds": (("perovskites_cpu_frozen_full_prior_top_e30",
                                                 "perovskites_cpu_frozen_full_prior_top_fixed_cost_e30",
                                                 "perovskites_cpu_frozen_full_prior_top_fixed_cost_confirm_e30"),
                                                "| -14.1 % | 0.002 (wilcoxon, n=10) | 10/10 | n/a (1 fold) |",
                                                "fixed_cost_in_step_every_cluster8"),
    "r26-perovskites-bottom-fixed-cost": (("perovskites_cpu_frozen_full_prior_bottom_fixed_cost_confirm_e30",),
                                          "| -11.1 % | 0.00016 (paired t, n=5) | 5/5 | n/a (1 fold) |",
                                          "fixed_cost_in_step_every_cluster8"),
    "r26-perovskites-bottom-fixed-cost-10-seeds": (("perovskites_cpu_frozen_full_prior_bottom_e30",
                                                    "perovskites_cpu_frozen_full_prior_bottom_fixed_cost_e30",
                                                    "perovskites_cpu_frozen_full_prior_bottom_fixed_cost_confirm_e30"),
                                                   "| -10.6 % | 0.002 (wilcoxon, n=10) | 10/10 | n/a (1 fold) |",
                                                   "fixed_cost_in_step_every_cluster8"),
    "r26-log_gvrh-prior-top-rank-centred": (("log_gvrh_cpu_frozen_full_prior_top_rank_e30",),
                                            "| -6.7 % | 0.072 (paired t, n=5) | 4/5 | n/a (1 fold) |",
                                            "cal_in_step_every_cluster8", "--metric", "centred_mae"),
}


@pytest.mark.parametrize("case", list(_POOLED_ROWS.values()), ids=list(_POOLED_ROWS))
def test_pooled_rows_reproduce(capsys, case):
    """Rows of RESULTS.md section 6 (rounds 24-26) come from the committed records of the configs, pooled with
    ``DIR_A,DIR_B:METHOD``: a CAL arm (the project's, unless the case names another) against ERM, with the case's
    extra options of ``compare_records.py``."""
    configs, row, method, *options = (*case, "cal_in_step_every_cluster8") if len(case) == 2 else case
    mod = _benchmark_script("compare_records")
    pooled = ",".join(str(REPO / "benchmarks" / "results" / name / "records") for name in configs)
    assert mod.main([*options, f"{pooled}:{method}", f"{pooled}:erm"]) == 0
    assert capsys.readouterr().out.splitlines()[2].endswith(row)


def test_fold_intervals_script_reproduces_results_md(capsys):
    """benchmarks/fold_intervals.py on committed records: round 10's arm is worse than ERM once folds are resampled."""
    mod = _benchmark_script("fold_intervals")
    records = REPO / "benchmarks" / "results" / "dielectric_cpu_loco10_e30" / "records"
    assert mod.main([str(records)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 + 5  # header, rule, one row per method other than ERM
    row = "| dielectric_cpu_loco10_e30 | LOCO | cal_in_step_every_cluster8 | +1.7 % | 0.21 | 30 | 10 | +0.2 to +3.0 % |"
    assert row in rows
    assert mod.main([str(records), "--min-folds", "11"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(SystemExit):
        mod.main([str(records), "--min-folds", "1"])


def test_selection_bias_script_reproduces_results_md(capsys):
    """benchmarks/selection_bias.py on the committed round-9 records: the validation gain is at the selected
    epoch only."""
    mod = _benchmark_script("selection_bias")
    records = REPO / "benchmarks" / "results" / "dielectric_cpu_loco10_e30" / "records"
    assert mod.main([str(records)]) == 0
    rows = capsys.readouterr().out.splitlines()
    [row] = [r for r in rows if r.startswith("| dielectric_cpu_loco10_e30 | cal_in_step_every |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["30", "-0.9 % (20/30)", "+0.1 % (18/30)"]
    assert cells[7] == "+3.2 % (9/30)"
    with pytest.raises(SystemExit):
        mod.main([str(records), "--last", "1"])
    with pytest.raises(SystemExit, match="fewer than 31 epochs"):
        mod.main([str(records), "--last", "30"])


def test_finetune_property_paired_table_reproduces_results_md():
    """The paired rows of benchmarks/bench_finetune_property.py on the committed dielectric records
    (RESULTS.md s. 3)."""
    mod = _benchmark_script("bench_finetune_property")
    results = json.loads((REPO / "benchmarks" / "results" / "finetune_property" / "results.json").read_text())
    rows = mod.paired_table(results).splitlines()
    assert "| cal vs finetune | -0.5 % (3/9) | -5.8 % (8/9) |" in rows
    assert "| cal+defaults vs finetune+defaults | -1.9 % (5/9) | -1.0 % (6/9) |" in rows
    assert "| cal+defaults vs zero_shot | -4.0 % (5/9) | -8.1 % (7/9) |" in rows
    # a pair is only formed on the same (fold, seed, n): drop one run and its twin loses that pair
    fewer = [r for r in results if not (r["method"] == "finetune" and r["fold"] == "3" and r["seed"] == 0)]
    [row] = [row for row in mod.paired_table(fewer).splitlines() if row.startswith("| cal vs finetune |")]
    assert row.count("/8)") == 2, row


def test_round13_finetune_rows_reproduce():
    """RESULTS.md section 3, round 13: the frozen-encoder fine-tuning rows come from the committed records."""
    mod = _benchmark_script("bench_finetune_property")
    res = REPO / "benchmarks" / "results" / "finetune_property_frozen"
    expected = {
        "dielectric": ["| cal vs finetune | -0.6 % (11/30) [-1.3, -0.0] | -2.6 % (15/30) [-5.5, +0.2] |",
                       "| finetune+defaults+l1 vs finetune+defaults | -1.7 % (22/30) [-3.3, -0.2] "
                       "| -7.4 % (28/30) [-11.3, -4.3] |"],
        "log_gvrh": ["| cal vs finetune | -1.8 % (15/30) [-3.3, -0.5] | -3.6 % (23/30) [-6.1, -1.6] |",
                     "| cal+defaults+l1 vs cal+defaults | -1.1 % (17/30) [-2.2, -0.1] | -0.3 % (16/30) [-1.3, +0.7] |"],
    }
    for dataset, rows in expected.items():
        results = json.loads((res / f"{dataset}.json").read_text())
        table = mod.paired_table(results).splitlines()
        for row in rows:
            assert row in table
        # the documented source claim: every squared-loss bare call within 5 %, 60 runs per arm
        bare = [r for r in results if r["method"] in ("cal+defaults", "finetune+defaults")]
        assert len(bare) == 120 and max(r["source_change_pct"] for r in bare) < 5.0


def test_finetune_property_figure_from_records(tmp_path):
    """bench_finetune_property.figure draws the committed records into a PNG (and only reads them)."""
    mod = _benchmark_script("bench_finetune_property")
    path = REPO / "benchmarks" / "results" / "finetune_property_frozen" / "log_gvrh.json"
    text = path.read_text()
    out = tmp_path / "fig.png"
    mod.figure(json.loads(text), out, title="log_gvrh")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert path.read_text() == text


def test_round13_confirmation_rows_reproduce(capsys):
    """The round 13 rows of RESULTS.md come from the committed records, one split family at a time."""
    mod = _benchmark_script("compare_records")
    res = REPO / "benchmarks" / "results"
    expected = {  # (LOCO: CAL vs control, random: CAL vs control)
        "dielectric": ("| -0.6 % | 0.058 (wilcoxon, n=30) | 20/30 | -1.6 to +0.4 % (10 folds) |",
                       "| -0.0 % | 0.76 (wilcoxon, n=30) | 15/30 | -0.4 to +0.4 % (10 folds) |"),
        "log_gvrh": ("| -1.0 % | 0.17 (wilcoxon, n=30) | 17/30 | -2.0 to -0.0 % (10 folds) |",
                     "| -0.1 % | 0.67 (wilcoxon, n=30) | 13/30 | -0.5 to +0.2 % (10 folds) |"),
    }
    for dataset, rows_expected in expected.items():
        records = res / f"{dataset}_cpu_frozen_confirm_e30" / "records"
        for split, row in zip(("LOCO", "random"), rows_expected, strict=True):
            arms = [f"{records}:cal_in_step_every_cluster8", f"{records}:in_step_every_control"]
            assert mod.main(["--split", split, *arms]) == 0
            assert capsys.readouterr().out.splitlines()[2].endswith(row)
    with pytest.raises(SystemExit, match=r"on split 'SOAP'"):
        mod.main(["--split", "SOAP", f"{records}:erm", f"{records}:cal_in_step_every_cluster8"])

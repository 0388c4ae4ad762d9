"""The committed benchmark results can be reproduced from the committed configs.

Every record under ``benchmarks/results/<name>/records`` must come from ``benchmarks/configs/<name>.toml``
as it is now: its method, split family, fold and seed are in the config, and its settings fingerprint is
the one the runner computes from the config (so ``mgl-cal benchmark`` would skip it, not retrain it or
refuse it). The ``benchmark`` name inside a record may be older than the config's: two configs were renamed
when folds were added (``log_gvrh_cpu_random5``, ``log_gvrh_cpu_sparseycluster5``; RESULTS.md section 6).
An edited config whose old records were left behind fails here. Needs no data and trains nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import matgl_cal.benchmark._runner as runner_mod
from matgl_cal.benchmark import load_config, load_records

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "benchmarks" / "configs").glob("*.toml"))
RESULTS = REPO / "benchmarks" / "results"


def test_there_are_committed_configs():
    assert len(CONFIGS) >= 10, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_names_its_own_results_folder(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert Path(cfg.output_dir) == Path("benchmarks/results") / path.stem


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_committed_records_match_their_config(path):
    cfg = load_config(path)
    records_dir = REPO / cfg.output_dir / "records"
    if not records_dir.is_dir():
        pytest.skip(f"{cfg.name}: no committed records")
    records = load_records(records_dir)
    assert records, f"{records_dir} holds no records"
    methods = {m.name for m in cfg.methods}
    for r in records:
        where = f"{cfg.name}: {r['method']} {r['split']}/{r['fold']} seed {r['seed']}"
        assert r["method"] in methods, f"{where}: method not in the config"
        assert r["seed"] in cfg.seeds, f"{where}: seed not in the config"
        split = cfg.split(r["split"])
        if split.count is None:
            assert str(r["fold"]) in split.folds, f"{where}: fold not in the config"
        expected = runner_mod._fingerprint(cfg, cfg.method(r["method"]), split)
        assert r["fingerprint"] == expected, f"{where}: made with other settings than the config states"


def test_every_results_folder_with_records_has_a_config():
    names = {p.stem for p in CONFIGS}
    folders = {p.parent.name for p in RESULTS.glob("*/records")}
    assert folders, "no committed record folders found"
    assert folders <= names, f"record folders without a config: {sorted(folders - names)}"

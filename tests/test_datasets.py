"""Tests for matgl_cal.datasets: registry, loaders, OOD folds and the graph cache.

Fast tests build tiny ``.json.gz`` files in ``tmp_path`` with the layout of the shared files.
Tests marked ``shared`` read the real files of ``../shared/data`` (skipped when absent).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from matgl_cal.datasets import (
    FAMILIES,
    CachedGraphDataset,
    DataFile,
    DatasetInfo,
    StructureDataset,
    _graph_cache,
    _loaders,
    get_dataset_info,
    graph_cache_key,
    graphs_for,
    list_datasets,
    load_dataset,
    load_matbench_cv_folds,
    load_ood_folds,
    register_dataset,
    resolve_cache_dir,
    resolve_data_dir,
    unregister_dataset,
)

SHARED = Path(__file__).parents[1] / ".." / "shared"
ELEMENTS = ("H", "Li", "O", "Na", "Mg", "Si", "Cl")


# ----------------------------------------------------------------------------- fixtures


def _structures() -> list[Structure]:
    return [
        Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
        Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.hexagonal(3.0, 4.5), ["Li", "O", "H"], [[0, 0, 0], [1 / 3, 2 / 3, 0.3], [1 / 3, 2 / 3, 0.5]]),
        Structure(Lattice.cubic(4.0), ["Na", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    ]


def _write_gz(path: Path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(obj, fh)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Data and cache dirs under tmp_path (never the working directory or $HOME)."""
    data = tmp_path / "data"
    cache = tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv("MATGL_CAL_DATA", str(data))
    monkeypatch.setenv("MATGL_CAL_CACHE", str(cache))
    monkeypatch.setenv("MATGL_CAL_OFFLINE", "1")
    registered: list[str] = []

    def register(info: DatasetInfo) -> DatasetInfo:
        register_dataset(info, overwrite=True)
        registered.append(info.name)
        return info

    yield data, cache, register
    for name in registered:
        unregister_dataset(name)


@pytest.fixture
def tiny_cif(env):
    """A 5-entry dataset in the MatUQ layout (CIF records) + OOD folds + Matbench CV folds."""
    data, _, register = env
    structs = _structures()
    targets = [1.5, 2.5, None, 4.0, 5.5]  # entry 2 has a null target
    records = [
        {
            "id": i,
            "target": t,
            "formula": s.composition.reduced_formula,
            "nsites": len(s),
            "cif": s.to(fmt="cif"),
            "label": "x",
        }
        for i, (s, t) in enumerate(zip(structs, targets, strict=True))
    ]
    sha = _write_gz(data / "tiny" / "tiny.json.gz", {"meta": {"dataset": "tiny", "n_entries": 5}, "data": records})
    folds = {
        "meta": {"dataset": "tiny", "n_entries": 5, "notes": {}},
        "splits": {
            "OFM_tiny_LOCO_target_clusters50": {
                "train": {"0": [0, 1, 2], "1": [2, 3, 4]},
                "val": {"0": [3], "1": [1]},
                "test": {"0": [4], "1": [0]},
            },
            "OFM_tiny_SparseXcluster_target_clusters50": {"val": {"0": [1]}, "test": {"0": [0, 4]}},
            "OFM_tiny_SparseYsingle_target_clusters50": {"test": {"0": [2], "1": [3]}},
            "SOAP_tiny_LOCO_target_clusters2": {
                "train": {"0": [0, 1], "1": [2, 3]},
                "val": {"0": [2], "1": [4]},
                "test": {"0": [3, 4], "1": [0, 1]},
            },
        },
    }
    osha = _write_gz(data / "tiny" / "tiny_ood_folds.json.gz", folds)
    cv_folds = {f"fold_{k}": {"train": [i for i in range(5) if i != k], "test": [k]} for k in range(5)}
    cv = {"meta": {"n_entries": 5}, "folds": cv_folds}
    csha = _write_gz(data / "tiny" / "tiny_matbench_v0.1_5fold.json.gz", cv)
    return register(
        DatasetInfo(
            name="tiny",
            file=DataFile("tiny/tiny.json.gz", sha),
            target="target",
            id_field="id",
            units={"target": "eV"},
            ood_folds=DataFile("tiny/tiny_ood_folds.json.gz", osha),
            cv_folds=DataFile("tiny/tiny_matbench_v0.1_5fold.json.gz", csha),
        )
    )


@pytest.fixture
def tiny_list(env):
    """A matcalc-style plain JSON list with pymatgen structure dicts."""
    data, _, register = env
    recs = [
        {"mp_id": f"mp-{i}", "structure": s.as_dict(), "bulk_modulus_vrh": 10.0 * (i + 1), "tensor": [[1.0]]}
        for i, s in enumerate(_structures())
    ]
    sha = _write_gz(data / "lst" / "lst.json.gz", recs)
    return register(
        DatasetInfo(
            name="tiny_list",
            file=DataFile("lst/lst.json.gz", sha[:16]),
            target="bulk_modulus_vrh",
            id_field="mp_id",
            units={"bulk_modulus_vrh": "GPa"},
            layout="list",
        )
    )


# ----------------------------------------------------------------------------- registry


def test_registry_has_the_known_datasets():
    expected = {
        "matbench_dielectric",
        "matbench_log_gvrh",
        "matbench_perovskites",
        "matbench_jdft2d",
        "matbench_mp_gap",
        "jarvis_supercon_3d",
        "piezoelectric_tensor",
        "dielectric_constant",
        "elastic_tensor_2015",
        "flla_2015",
        "jarvis_dft3d_sample50",
        "wbm",
        "mp_binary_elasticity",
        "alexandria_binary_phonon",
    }
    assert expected <= set(list_datasets())
    wbm = get_dataset_info("wbm")
    assert wbm.file.path.endswith("wbm-random-pbe52-equilibrium-2025.1.json.gz")
    assert wbm.file.url is not None and wbm.layout == "list"
    assert get_dataset_info("matbench_log_gvrh").file.url is None
    assert get_dataset_info("matbench_log_gvrh").units_of("target") == "log10(GPa)"
    for name in expected:
        info = get_dataset_info(name)
        assert info.file.sha256 is not None and len(info.file.sha256) == 64
        assert info.source


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*matbench_log_gvrh"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(get_dataset_info("wbm"))
    with pytest.raises(ValueError, match="sha256 must be"):
        DataFile("x.json.gz", "XYZ")


def test_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("MATGL_CAL_DATA", str(tmp_path / "env_data"))
    monkeypatch.setenv("MATGL_CAL_CACHE", str(tmp_path / "env_cache"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env_data"
    assert resolve_cache_dir() == tmp_path / "env_cache"
    monkeypatch.delenv("MATGL_CAL_DATA")
    assert resolve_data_dir() == tmp_path / "env_cache" / "data"
    monkeypatch.delenv("MATGL_CAL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "matgl_cal" / "data"


# ----------------------------------------------------------------------------- loading


def test_load_cif_dataset_drops_nan_with_warning(tiny_cif):
    with pytest.warns(UserWarning, match=r"dropped 1 entries whose 'target' is missing/NaN"):
        ds = load_dataset("tiny")
    assert isinstance(ds, StructureDataset)
    assert ds.ids == [0, 1, 3, 4]
    assert ds.targets.dtype == np.float64
    np.testing.assert_allclose(ds.targets, [1.5, 2.5, 4.0, 5.5])
    assert ds.units == "eV" and ds.target_name == "target"
    assert ds.meta["n_dropped_nan"] == 1 and ds.meta["dropped_ids"] == [2]
    assert ds.structures[0].composition.reduced_formula == "NaCl"
    assert ds.structures[2].composition.reduced_formula == "LiHO"
    sub = ds.subset([3, 0])
    assert sub.ids == [4, 0] and sub.targets.tolist() == [5.5, 1.5]
    assert ds.index_of([3, 0]) == [2, 0]
    with pytest.raises(ValueError, match="not in dataset"):
        ds.index_of([2])


def test_load_limit_and_other_target(tiny_cif):
    with pytest.warns(UserWarning, match="dropped 1"):
        ds = load_dataset("tiny", limit=3)
    assert ds.ids == [0, 1, 3]
    ds = load_dataset("tiny", target="nsites")
    assert ds.targets.tolist() == [2, 2, 2, 3, 2] and ds.units == "unknown"
    with pytest.raises(ValueError, match="limit must be a positive int"):
        load_dataset("tiny", limit=0)


def test_load_list_layout(tiny_list):
    ds = load_dataset("tiny_list")
    assert ds.ids == [f"mp-{i}" for i in range(5)]
    assert ds.targets.tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert ds.units == "GPa"
    assert ds.structures[1] == _structures()[1]


def test_bad_target_fields(tiny_cif, tiny_list):
    expected = r"target field 'gap' not in dataset 'tiny'; numeric fields: \['id', 'nsites', 'target'\]"
    with pytest.raises(ValueError, match=expected):
        load_dataset("tiny", target="gap")
    with pytest.raises(ValueError, match=r"must hold numbers; entry 0 has str value 'x'"):
        load_dataset("tiny", target="label")
    with pytest.raises(ValueError, match=r"entry 'mp-0' has list value"):
        load_dataset("tiny_list", target="tensor")


def test_missing_file_names_path_and_env_var(env):
    data, _, register = env
    register(DatasetInfo(name="ghost", file=DataFile("ghost/ghost.json.gz"), target="t", id_field="id"))
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("ghost")
    msg = str(err.value)
    assert str(data / "ghost" / "ghost.json.gz") in msg
    assert "MATGL_CAL_DATA" in msg and "url=None" in msg


def test_checksum_mismatch(env, tiny_cif):
    _, _, register = env
    register(DatasetInfo(name="tiny_bad", file=DataFile(tiny_cif.file.path, "0" * 64), target="target", id_field="id"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_dataset("tiny_bad")
    with pytest.warns(UserWarning, match="dropped 1"):
        assert len(load_dataset("tiny_bad", verify=False)) == 4


def test_download_from_url(env, tiny_list, tmp_path, monkeypatch):
    """A file:// URL exercises the whole download path without network."""
    data, _, register = env
    monkeypatch.delenv("MATGL_CAL_OFFLINE")
    src = data / tiny_list.file.path
    url = src.resolve().as_uri()
    kw = {"target": "bulk_modulus_vrh", "id_field": "mp_id", "layout": "list"}
    register(DatasetInfo(name="dl", file=DataFile("dl/x.json.gz", tiny_list.file.sha256, url), **kw))
    ds = load_dataset("dl")
    assert len(ds) == 5 and (data / "dl" / "x.json.gz").is_file()
    # a wrong checksum leaves nothing behind
    register(DatasetInfo(name="dl_bad", file=DataFile("dl_bad/x.json.gz", "f" * 64, url), **kw))
    with pytest.raises(ValueError, match="checksum mismatch for download"):
        load_dataset("dl_bad")
    assert list((data / "dl_bad").iterdir()) == []
    # unreachable URL -> FileNotFoundError that names the env var
    gone = DataFile("dl_gone/x.json.gz", None, (tmp_path / "nowhere.gz").as_uri())
    register(DatasetInfo(name="dl_gone", file=gone, target="t", id_field="id"))
    with pytest.raises(FileNotFoundError, match=r"download from .* failed.*MATGL_CAL_DATA"):
        load_dataset("dl_gone")
    # offline mode never tries
    monkeypatch.setenv("MATGL_CAL_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="downloads disabled"):
        load_dataset("dl_gone")


def test_parse_cache_is_reused(tiny_list, env, monkeypatch):
    _, cache, _ = env
    first = load_dataset("tiny_list")
    files = list((cache / "structures").glob("*.pkl"))
    file_sha = hashlib.sha256((env[0] / tiny_list.file.path).read_bytes()).hexdigest()
    assert len(files) == 1 and files[0].name.startswith(file_sha)

    def boom(*args, **kwargs):
        raise AssertionError("parsed again despite the cache")

    monkeypatch.setattr(_loaders, "_parse_all", boom)
    second = load_dataset("tiny_list")
    assert second.structures == first.structures
    assert load_dataset("tiny_list", limit=2).structures == first.structures[:2]


def test_parallel_parse_matches_serial(tiny_cif):
    with pytest.warns(UserWarning):
        serial = load_dataset("tiny", use_cache=False, n_jobs=1)
    raw = [s.to(fmt="cif") for s in _structures()] * 60  # 300 CIFs -> 2 chunks
    par = _loaders._parse_all("cif", raw, n_jobs=2, progress=False, desc="t")
    assert len(par) == 300
    assert par[0] == serial.structures[0] and par[5 + 3] == serial.structures[2]


# ----------------------------------------------------------------------------- OOD folds


def test_ood_folds_families_and_gaps(tiny_cif):
    folds = load_ood_folds("tiny")
    assert folds.families == ("LOCO", "SparseXcluster", "SparseYsingle", "SOAP_LOCO")
    assert set(folds.families) <= set(FAMILIES)
    assert folds.split_names["LOCO"] == "OFM_tiny_LOCO_target_clusters50"
    assert folds.fold_keys("LOCO") == ["0", "1"]
    s = folds.get("LOCO", 1)
    assert (s.train, s.val, s.test) == ([2, 3, 4], [1], [0])
    assert folds.get("LOCO", "1") == s
    assert folds.get("OFM_tiny_LOCO_target_clusters50", 0).test == [4]  # raw split name works too
    # val + test only: train = complement
    s = folds.get("SparseXcluster", 0)
    assert (s.train, s.val, s.test) == ([2, 3], [1], [0, 4])
    assert s.meta["derived"] == ["train"] and folds.missing_parts("SparseXcluster") == ("train",)
    # test only: train = complement, val empty unless asked for
    s = folds.get("SparseYsingle", 1)
    assert (s.train, s.val, s.test) == ([0, 1, 2, 4], [], [3])
    assert folds.missing_parts("SparseYsingle") == ("train", "val")
    s2 = folds.get("SparseYsingle", 1, val_fraction=0.25, seed=0)
    assert len(s2.val) == 1 and sorted(s2.train + s2.val) == [0, 1, 2, 4]
    assert folds.get("SparseYsingle", 1, val_fraction=0.25, seed=0) == s2
    for fam in folds.families:
        for _key, split in folds.iter_folds(fam):
            split.check(folds.n_entries)


def test_ood_folds_errors(tiny_cif, env):
    folds = load_ood_folds("tiny")
    with pytest.raises(ValueError, match=r"unknown family 'Sparse'.*available: \['LOCO'"):
        folds.get("Sparse", 0)
    with pytest.raises(ValueError, match=r"unknown fold_key 7 for family 'LOCO'; available: \['0', '1'\]"):
        folds.get("LOCO", 7)
    _, _, register = env
    register(DatasetInfo(name="nofolds", file=tiny_cif.file, target="target", id_field="id"))
    with pytest.raises(ValueError, match="has no ood_folds file"):
        load_ood_folds("nofolds")


def test_ood_folds_to_dataset_indices(tiny_cif):
    with pytest.warns(UserWarning):
        ds = load_dataset("tiny")
    split = load_ood_folds("tiny").get("LOCO", 0)
    with pytest.raises(ValueError, match="train ids are not in"):
        split.to_indices(ds.ids)  # id 2 was dropped (NaN target)
    idx = split.to_indices(ds.ids, strict=False)
    assert (idx.train, idx.val, idx.test) == ([0, 1], [2], [3])


def test_matbench_cv_folds(tiny_cif):
    cv = load_matbench_cv_folds("tiny")
    assert cv.families == ("MatbenchCV",)
    assert cv.fold_keys("MatbenchCV") == [f"fold_{k}" for k in range(5)]
    s = cv.get("MatbenchCV", 3)
    assert s == cv.get("MatbenchCV", "fold_3")
    assert (s.train, s.val, s.test) == ([0, 1, 2, 4], [], [3])


# ----------------------------------------------------------------------------- graph cache


def _dataset(structs=None) -> StructureDataset:
    structs = _structures() if structs is None else structs
    return StructureDataset(
        name="mini",
        ids=list(range(len(structs))),
        structures=structs,
        targets=np.arange(len(structs), dtype=float) + 0.5,
        target_name="y",
        units="eV",
    )


def test_graphs_identical_to_mgldataset(tmp_path):
    from matgl.ext.pymatgen import Structure2Graph
    from matgl.graph.data import MGLDataset

    ds = _dataset()
    ours = graphs_for(ds, element_types=ELEMENTS, cutoff=4.0, cache_dir=tmp_path / "c")
    ref = MGLDataset(
        structures=ds.structures,
        labels={"y": ds.targets.tolist()},
        converter=Structure2Graph(element_types=ELEMENTS, cutoff=4.0),
        save_cache=False,
        root=str(tmp_path / "mgl"),
    )
    assert len(ours) == len(ref) == 5
    # from memory and from the on-disk cache
    for gds in (ours, graphs_for(ds, element_types=ELEMENTS, cutoff=4.0, cache_dir=tmp_path / "c")):
        for i in range(len(ref)):
            g, lat, st, lab = gds[i]
            rg, rlat, rst, rlab = ref[i]
            assert list(g.to_dict()) == list(rg.to_dict())
            for k, v in rg.to_dict().items():
                if isinstance(v, torch.Tensor):
                    assert v.dtype == g[k].dtype and torch.equal(v, g[k]), k
                else:
                    assert v == g[k], k
            assert g.num_nodes == rg.num_nodes
            assert torch.equal(lat, rlat) and lat.dtype == rlat.dtype
            assert torch.equal(st, rst) and st.dtype == rst.dtype
            assert lab.keys() == rlab.keys() and torch.equal(lab["y"], rlab["y"])
    assert ours.labels == {"y": ds.targets.tolist()}


def test_graph_dataset_works_with_mgldataloader(tmp_path):
    from matgl.graph.data import MGLDataLoader, collate_fn_graph

    gds = graphs_for(_dataset(), element_types=ELEMENTS, cutoff=4.0, cache_dir=tmp_path)
    train = torch.utils.data.Subset(gds, [0, 1, 2])
    val = torch.utils.data.Subset(gds, [3, 4])
    for collate in (collate_fn_graph, None):  # None: MatGL picks the collate fn from .labels
        gen = torch.Generator().manual_seed(0)
        tl, vl = MGLDataLoader(train, val, collate_fn=collate, batch_size=2, num_workers=0, generator=gen)
        g, lat, st, y = next(iter(vl))
        assert g.num_graphs == 2 and lat.shape == (2, 3, 3) and st.shape == (2, 2)
        assert torch.allclose(y, torch.tensor([3.5, 4.5]))
        assert sum(b[0].num_graphs for b in tl) == 3
    # items are copies: mutating one does not change the cache
    g0 = gds[0][0]
    g0.frac_coords += 1.0
    assert not torch.equal(gds[0][0].frac_coords, g0.frac_coords)
    with pytest.raises(IndexError):
        gds[5]
    assert torch.equal(gds[-1][0].node_type, gds[4][0].node_type)


def test_graph_cache_key_depends_on_structures(tmp_path, monkeypatch):
    ds = _dataset()
    a = graphs_for(ds, element_types=ELEMENTS, cutoff=4.0, cache_dir=tmp_path)
    assert a.cache_path is not None and a.cache_path.is_file()
    assert not [p for p in a.cache_path.parent.iterdir() if p.name.startswith(".")]  # no temp files left

    structs = _structures()
    structs[2] = structs[2].copy()
    structs[2].translate_sites([0], [0.01, 0.0, 0.0])
    moved = _dataset(structs)
    key = graph_cache_key(moved.ids, moved.structures, element_types=ELEMENTS, cutoff=4.0)
    assert key != a.cache_key
    assert graph_cache_key(ds.ids, ds.structures, element_types=ELEMENTS, cutoff=4.5) != a.cache_key
    assert graph_cache_key(ds.ids, ds.structures, element_types=ELEMENTS[::-1], cutoff=4.0) != a.cache_key
    assert graph_cache_key([str(i) for i in ds.ids], ds.structures, element_types=ELEMENTS, cutoff=4.0) != a.cache_key

    b = graphs_for(moved, element_types=ELEMENTS, cutoff=4.0, cache_dir=tmp_path)
    assert b.cache_key == key and b.cache_path != a.cache_path
    assert not torch.equal(b[2][0].frac_coords, a[2][0].frac_coords)

    def boom(*args, **kwargs):
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(_graph_cache, "_convert", boom)
    again = graphs_for(ds, element_types=ELEMENTS, cutoff=4.0, cache_dir=tmp_path, label_name="energy")
    assert isinstance(again, CachedGraphDataset) and again.labels == {"energy": ds.targets.tolist()}


def test_graph_cache_errors(tmp_path):
    ds = _dataset()
    with pytest.raises(ValueError, match=r"contains element 'Mg'.*not in element_types"):
        graphs_for(ds, element_types=("Na", "Cl", "Si", "O", "Li", "H"), cutoff=4.0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cutoff must be a positive number"):
        graphs_for(ds, element_types=ELEMENTS, cutoff=0.0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="element_types must be"):
        graphs_for(ds, element_types="NaCl", cutoff=4.0, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="StructureDataset"):
        graphs_for(ds.structures, element_types=ELEMENTS, cutoff=4.0, cache_dir=tmp_path)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- real shared files


@pytest.fixture
def shared_data(monkeypatch, tmp_path):
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data folder not found at {data.resolve()} (needs ../shared next to the repository)")
    monkeypatch.setenv("MATGL_CAL_DATA", str(data))
    monkeypatch.setenv("MATGL_CAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MATGL_CAL_OFFLINE", "1")
    return data


@pytest.mark.shared
def test_shared_checksums_match_provenance(shared_data):
    prov = (shared_data / "PROVENANCE.md").read_text()
    table = dict(re.findall(r"\| `data/([^`]+)` \| \d+ \| `([0-9a-f]{16})` \|", prov))
    assert len(table) >= 20
    for name in list_datasets():
        info = get_dataset_info(name)
        for df in (info.file, info.ood_folds, info.cv_folds):
            if df is not None:
                assert table[df.path] == df.sha256[:16], df.path


@pytest.mark.shared
def test_shared_jdft2d_and_folds(shared_data):
    ds = load_dataset("matbench_jdft2d", limit=3)
    assert ds.ids == [0, 1, 2]
    assert ds.structures[0].composition.reduced_formula == "HfSiTe"
    assert ds.targets[0] == pytest.approx(63.5938, abs=1e-4)
    assert ds.units == "meV/atom"
    folds = load_ood_folds("matbench_jdft2d")
    assert folds.families == FAMILIES
    assert [len(folds.fold_keys(f)) for f in FAMILIES] == [50, 50, 50, 50, 50, 40]
    for fam in FAMILIES:
        s = folds.get(fam, folds.fold_keys(fam)[0])
        s.check(636)
        assert sum(s.sizes) == 636
    cv = load_matbench_cv_folds("matbench_jdft2d")
    tests = sorted(i for k in cv.fold_keys("MatbenchCV") for i in cv.get("MatbenchCV", k).test)
    assert tests == list(range(636))


@pytest.mark.shared
def test_shared_fold_gaps(shared_data):
    per = load_ood_folds("matbench_perovskites")
    s = per.get("LOCO", 0)
    assert s.meta["derived"] == ["train"] and len(s.val) > 0
    assert sum(s.sizes) == 18928
    s.check(18928)
    gap = load_ood_folds("matbench_mp_gap")
    s = gap.get("SparseXcluster", 0)
    assert s.val == [] and sum(s.sizes) == 106113
    assert gap.missing_parts("LOCO") == ("train", "val")
    assert gap.missing_parts("SOAP_LOCO") == ()


@pytest.mark.shared
def test_shared_structure_dict_files(shared_data):
    wbm = load_dataset("wbm", limit=4)
    assert wbm.ids[0].startswith("wbm-") and wbm.units == "eV/atom"
    assert len(wbm.structures[0]) > 0
    el = load_dataset("elastic_tensor_2015", target="K_VRH", limit=2, use_cache=False)
    assert el.units == "GPa" and el.ids[0].startswith("mp-")

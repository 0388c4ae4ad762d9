"""Tests for matgl_cal.splits: split makers, composition features and the OOD score."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from matgl_cal.splits import (
    Split,
    chemistry_split,
    cluster_split,
    composition_features,
    leave_cluster_out_splits,
    nearest_train_distance,
    ood_score,
    property_range_split,
    random_split,
)


def _assert_partition(split: Split, n: int) -> None:
    split.check(n)
    everything = sorted([*split.train, *split.val, *split.test])
    assert everything == list(range(n))
    for part in split:
        assert part == sorted(part)


def _blobs(seed: int = 0, n: int = 100, d: int = 4, gap: float = 50.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, size=(n, d))
    b = rng.normal(gap, 1.0, size=(n, d))
    return np.vstack([a, b])


# ----------------------------------------------------------------------------- random_split


def test_random_split_partition_sizes_and_determinism():
    s1 = random_split(100, val_fraction=0.1, test_fraction=0.2, seed=3)
    s2 = random_split(100, val_fraction=0.1, test_fraction=0.2, seed=3)
    s3 = random_split(100, val_fraction=0.1, test_fraction=0.2, seed=4)
    _assert_partition(s1, 100)
    assert s1.sizes == (70, 10, 20)
    assert s1 == s2
    assert s1 != s3
    tr, va, te = s1
    assert tr == s1.train and va == s1.val and te == s1.test


def test_random_split_zero_val_gives_empty_val():
    s = random_split(10, val_fraction=0.0, test_fraction=0.3, seed=0)
    _assert_partition(s, 10)
    assert s.val == [] and len(s.test) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.1, "test_fraction": 0.0}, "test_fraction must lie in"),
        ({"val_fraction": 0.1, "test_fraction": 1.0}, "test_fraction must lie in"),
        ({"val_fraction": -0.1, "test_fraction": 0.2}, "val_fraction must lie in"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1, got 0.5 \\+ 0.5"),
        ({"val_fraction": float("nan"), "test_fraction": 0.5}, "val_fraction"),
    ],
)
def test_random_split_bad_fractions(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_split(100, seed=0, **kwargs)


def test_random_split_empty_part_and_types():
    with pytest.raises(ValueError, match="empty part"):
        random_split(3, val_fraction=0.1, test_fraction=0.1, seed=0)
    with pytest.raises(TypeError, match="n must be an int"):
        random_split(10.0, val_fraction=0.1, test_fraction=0.2, seed=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an int"):
        random_split(10, val_fraction=0.1, test_fraction=0.2, seed="0")  # type: ignore[arg-type]


def test_split_to_indices_and_check():
    s = Split(["b", "c"], [], ["a"])
    assert s.to_indices(["a", "b", "c", "d"]) == Split([1, 2], [], [0])
    with pytest.raises(ValueError, match="test ids are not in"):
        s.to_indices(["b", "c"])
    assert s.to_indices(["b", "c"], strict=False).test == []
    with pytest.raises(ValueError, match="overlap"):
        Split([0, 1], [], [1]).check()
    with pytest.raises(ValueError, match="empty test"):
        Split([0, 1], [], []).check()
    with pytest.raises(ValueError, match="outside range"):
        Split([0, 5], [], [1]).check(n=3)


# ----------------------------------------------------------------------------- cluster_split


def test_cluster_split_holds_out_one_blob():
    x = _blobs()
    splits = [cluster_split(x, n_clusters=2, test_cluster=k, seed=0) for k in (0, 1)]
    for s in splits:
        _assert_partition(s, 200)
        assert len(s.test) == 100
        # the test set is one whole blob
        assert set(s.test) in ({*range(100)}, {*range(100, 200)})
    assert set(splits[0].test) != set(splits[1].test)
    assert cluster_split(x, n_clusters=2, test_cluster=0, seed=0) == splits[0]


def test_cluster_split_val_fraction_and_all_clusters():
    x = _blobs()
    s = cluster_split(x, n_clusters=2, test_cluster=0, seed=1, val_fraction=0.2)
    _assert_partition(s, 200)
    assert len(s.val) == 20
    allk = leave_cluster_out_splits(x, n_clusters=2, seed=1, val_fraction=0.2)
    assert len(allk) == 2
    assert allk[0] == s
    assert allk[0].meta["cluster_sizes"] == [100, 100]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_clusters": 2, "test_cluster": 2}, ValueError, "test_cluster must be in range"),
        ({"n_clusters": 1, "test_cluster": 0}, ValueError, "n_clusters must be an int >= 2"),
        ({"n_clusters": 500, "test_cluster": 0}, ValueError, "exceeds the number of samples"),
        ({"n_clusters": 2, "test_cluster": 0.0}, TypeError, "test_cluster must be an int"),
    ],
)
def test_cluster_split_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cluster_split(_blobs(), seed=0, **kwargs)


def test_features_validation():
    with pytest.raises(ValueError, match="2-D array"):
        cluster_split(np.zeros(10), n_clusters=2, test_cluster=0, seed=0)
    bad = _blobs()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        cluster_split(bad, n_clusters=2, test_cluster=0, seed=0)


# ----------------------------------------------------------------------------- property_range_split


def test_property_range_split_top_and_bottom():
    y = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    top = property_range_split(y, q=0.3)
    _assert_partition(top, 10)
    assert top.test == [2, 4, 6]  # 9, 7, 8
    assert top.meta["threshold"] == 7.0
    bottom = property_range_split(y, q=0.2, side="bottom", val_fraction=0.25, seed=0)
    _assert_partition(bottom, 10)
    assert bottom.test == [1, 9]  # 1, 0
    assert len(bottom.val) == 2
    assert max(y[top.train]) < min(y[top.test])


@pytest.mark.parametrize("side", ["top", "bottom"])
def test_property_range_split_nested_is_the_same_split_inside_the_training_part(side):
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    outer = property_range_split(y, q=0.1, side=side, val_fraction=0.1, seed=0)
    inner = property_range_split(y, q=0.1, side=side, val_fraction=0.1, seed=0, nested=True)
    parts = [set(p) for p in inner]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # the real test set is in no part; everything else is in exactly one
    assert set().union(*parts) == set(range(200)) - set(outer.test)
    assert inner.meta["n_excluded"] == 20 and inner.meta["nested"] is True
    assert len(inner.test) == round(0.1 * 180) and len(inner.val) == round(0.1 * 162)
    # the inner test part is the same extrapolation made on the remainder: the next most extreme values
    sign = 1.0 if side == "top" else -1.0
    rest = np.array(inner.train + inner.val)
    assert (sign * y[inner.test]).min() >= (sign * y[rest]).max()
    assert (sign * y[outer.test]).min() >= (sign * y[inner.test]).max()
    assert inner.meta["outer_threshold"] == outer.meta["threshold"]
    # equals the plain split made on the outer training part (positions mapped back)
    pool = np.array(sorted(outer.train + outer.val))
    ref = property_range_split(y[pool], q=0.1, side=side)
    assert inner.test == sorted(pool[ref.test].tolist())
    # deterministic, and the default is nested=False
    assert property_range_split(y, q=0.1, side=side, val_fraction=0.1, seed=0, nested=True) == inner
    assert property_range_split(y, q=0.1, side=side, val_fraction=0.1, seed=0, nested=False) == outer


def test_property_range_split_nested_errors():
    with pytest.raises(TypeError, match="nested must be a bool, got str"):
        property_range_split(np.arange(10.0), q=0.2, nested="yes")
    # q * n < 0.5: not even the real test set has a sample
    with pytest.raises(ValueError, match="of n=20 samples gives an empty test or train"):
        property_range_split(np.arange(20.0), q=0.02, nested=True)
    # n = 10, q = 0.052: the real test set has round(0.52) = 1 sample, the 9 left give round(0.468) = 0
    with pytest.raises(ValueError, match="the 9 samples left after setting aside the real test set"):
        property_range_split(np.arange(10.0), q=0.052, nested=True)
    # q = 0.06: 1 set aside (value 9), then 1 held out of the 9 left (value 8)
    assert property_range_split(np.arange(10.0), q=0.06, nested=True).test == [8]


def test_property_range_split_ties_are_deterministic():
    y = np.array([1.0, 1.0, 1.0, 1.0])
    assert property_range_split(y, q=0.5).test == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"q": 0.0}, "q must lie in"),
        ({"q": 1.5}, "q must lie in"),
        ({"q": 0.5, "side": "middle"}, "side must be 'top' or 'bottom', got 'middle'"),
        ({"q": 0.01}, "empty test or train"),
    ],
)
def test_property_range_split_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        property_range_split(np.arange(10.0), **kwargs)
    with pytest.raises(ValueError, match="non-finite"):
        property_range_split([1.0, np.nan, 2.0], q=0.5)


# ----------------------------------------------------------------------------- chemistry / composition


def _structs() -> list[Structure]:
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    si = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    mgo = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    lio = Structure(Lattice.cubic(4.0), ["Li", "Li", "O"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0.5]])
    return [nacl, si, mgo, lio]


def test_chemistry_split():
    s = chemistry_split(_structs(), elements="O")
    _assert_partition(s, 4)
    assert s.test == [2, 3]
    s2 = chemistry_split(_structs(), elements=["Na", "Li"])
    assert s2.test == [0, 3]
    # compositions and formula strings work too
    assert chemistry_split([Composition("NaCl"), "SiO2", "Fe"], elements="O").test == [1]


def test_chemistry_split_errors():
    with pytest.raises(ValueError, match=r"element symbols.*'Xx'"):
        chemistry_split(_structs(), elements=["Xx"])
    with pytest.raises(ValueError, match="no structure contains"):
        chemistry_split(_structs(), elements="Fe")
    with pytest.raises(ValueError, match="every structure contains"):
        chemistry_split(["NaO", "MgO"], elements="O")
    with pytest.raises(ValueError, match="at least one element"):
        chemistry_split(_structs(), elements=[])


def test_composition_features():
    f = composition_features(_structs())
    assert f.shape == (4, 120)
    assert np.allclose(f[:, :118].sum(axis=1), 1.0)
    assert f[0, 10] == pytest.approx(0.5) and f[0, 16] == pytest.approx(0.5)  # Na (Z=11), Cl (Z=17)
    assert f[1, 13] == pytest.approx(1.0)  # Si
    assert f[3, 2] == pytest.approx(2 / 3)  # Li2O
    assert f[0, 118] == pytest.approx(14 / 118)  # mean Z of NaCl
    assert f[1, 119] == pytest.approx(1.9 / 4)  # Pauling X of Si
    assert np.all((f >= 0) & (f <= 1))
    with pytest.raises(TypeError, match="expected a pymatgen"):
        composition_features([1.0])


# ----------------------------------------------------------------------------- ood_score


def test_ood_score_blobs_known_answer():
    x = _blobs(n=150)
    cl = cluster_split(x, n_clusters=2, test_cluster=0, seed=0)
    score_cluster = ood_score(x[cl.train], x[cl.test], seed=0)
    rnd = random_split(len(x), val_fraction=0.0, test_fraction=0.5, seed=0)
    score_random = ood_score(x[rnd.train], x[rnd.test], seed=0)
    assert score_cluster > 10.0
    assert 0.8 < score_random < 1.25
    raw = ood_score(x[cl.train], x[cl.test], reference=None)
    assert raw == pytest.approx(float(np.mean(nearest_train_distance(x[cl.train], x[cl.test]))))
    assert raw > 40.0  # blobs 50*sqrt(4)=100 apart, minus the spread


def test_ood_score_errors():
    x = _blobs(n=10)
    with pytest.raises(ValueError, match="same number of columns"):
        ood_score(x, x[:, :2])
    with pytest.raises(ValueError, match="non-empty"):
        ood_score(x, x[:0])
    with pytest.raises(ValueError, match="reference must be 'random' or None"):
        ood_score(x, x, reference="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_repeats"):
        ood_score(x, x, n_repeats=0)

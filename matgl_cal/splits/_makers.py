"""Split container and deterministic split makers (random, cluster, property range, chemistry)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure

__all__ = [
    "Split",
    "chemistry_split",
    "cluster_split",
    "composition_features",
    "leave_cluster_out_splits",
    "property_range_split",
    "random_split",
]

#: Number of element columns of :func:`composition_features` (Z = 1 .. 118).
N_ELEMENTS = 118


@dataclass(frozen=True)
class Split:
    """One train / validation / test division.

    The entries are dataset ids for folds read from files (:func:`matgl_cal.datasets.load_ood_folds`)
    and 0-based positions for the split makers of this module. Use :meth:`to_indices` to turn ids
    into positions of a loaded dataset.

    Attributes:
        train: Training ids or indices (sorted).
        val: Validation ids or indices (sorted; may be empty, see the function that made it).
        test: Test ids or indices (sorted, never empty).
        meta: Free-form provenance, e.g. ``{"family": "LOCO", "fold_key": "3"}``.
    """

    train: list[Any]
    val: list[Any]
    test: list[Any]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __iter__(self):
        """Iterate over ``(train, val, test)`` so that ``tr, va, te = split`` works."""
        return iter((self.train, self.val, self.test))

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Number of entries in (train, val, test)."""
        return len(self.train), len(self.val), len(self.test)

    def to_indices(self, ids: Sequence[Any], *, strict: bool = True) -> Split:
        """Map ids to 0-based positions in ``ids`` (e.g. ``StructureDataset.ids``).

        Args:
            ids: The id of each position, length n.
            strict: If True, an id of this split that is not in ``ids`` raises; if False it is dropped
                (useful after ``load_dataset(limit=...)`` or after NaN targets were dropped).

        Returns:
            A new :class:`Split` holding sorted positions.

        Raises:
            ValueError: ``strict`` and some ids are missing from ``ids``.
        """
        pos = {i: k for k, i in enumerate(ids)}
        out = []
        for part_name, part in zip(("train", "val", "test"), self, strict=True):
            missing = [i for i in part if i not in pos]
            if missing and strict:
                raise ValueError(
                    f"Split.to_indices: {len(missing)} {part_name} ids are not in `ids` (first: {missing[:5]}); "
                    "pass strict=False to drop them."
                )
            out.append(sorted(pos[i] for i in part if i in pos))
        return Split(out[0], out[1], out[2], meta=dict(self.meta))

    def check(self, n: int | None = None) -> None:
        """Raise ``ValueError`` if parts overlap, ``test`` is empty or (given ``n``) an index is out of range."""
        sets = [set(p) for p in self]
        for (a, sa), (b, sb) in (
            (("train", sets[0]), ("val", sets[1])),
            (("train", sets[0]), ("test", sets[2])),
            (("val", sets[1]), ("test", sets[2])),
        ):
            both = sa & sb
            if both:
                raise ValueError(f"Split parts {a} and {b} overlap in {len(both)} entries (first: {sorted(both)[:5]}).")
        if not self.test:
            raise ValueError("Split has an empty test set.")
        if n is not None:
            bad = [i for s in sets for i in s if not (isinstance(i, (int, np.integer)) and 0 <= i < n)]
            if bad:
                raise ValueError(f"Split holds entries outside range(0, {n}): {sorted(bad)[:5]}.")


# ----------------------------------------------------------------------------- helpers


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r}).")
    return int(seed)


def _check_fraction(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float in (0, 1), got {type(value).__name__} ({value!r}).")
    value = float(value)
    lo_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (lo_ok and value < 1.0) or math.isnan(value):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}.")
    return value


def _carve_val(pool: np.ndarray, val_fraction: float, rng: np.random.Generator, who: str) -> tuple[list, list]:
    """Split ``pool`` (indices) into (train, val) with ``round(val_fraction * len(pool))`` val entries."""
    if val_fraction == 0.0:
        return sorted(pool.tolist()), []
    n_val = round(val_fraction * len(pool))
    if n_val == 0 or n_val >= len(pool):
        raise ValueError(
            f"{who}: val_fraction={val_fraction} of the {len(pool)} non-test entries gives an empty "
            "train or validation set; change val_fraction or use more data."
        )
    perm = rng.permutation(pool)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


def _as_2d_features(name: str, features: Any) -> np.ndarray:
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features), got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(arr)))} non-finite values (NaN or inf).")
    return arr


# ----------------------------------------------------------------------------- split makers


def random_split(n: int, *, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Random (in-distribution) split of ``range(n)``.

    Args:
        n: Number of samples (>= 3 when ``val_fraction > 0``).
        val_fraction: Fraction of samples in the validation set, in [0, 1) (0 gives an empty ``val``).
        test_fraction: Fraction of samples in the test set, in (0, 1).
        seed: Seed of the ``numpy.random.default_rng`` permutation.

    Returns:
        A :class:`Split` of sorted 0-based indices; disjoint and covering ``range(n)``.
        Sizes: ``n_test = round(test_fraction * n)``, ``n_val = round(val_fraction * n)``.

    Raises:
        ValueError: A fraction is outside its interval, the fractions sum to >= 1, or a part is empty.
        TypeError: ``n`` or ``seed`` is not an int.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {type(n).__name__} ({n!r}).")
    val_fraction = _check_fraction("val_fraction", val_fraction, allow_zero=True)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    seed = _check_seed(seed)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction} = "
            f"{val_fraction + test_fraction}."
        )
    n_test = round(test_fraction * n)
    n_val = round(val_fraction * n)
    if n_test == 0 or (val_fraction > 0 and n_val == 0) or n - n_test - n_val <= 0:
        raise ValueError(
            f"random_split(n={n}, val_fraction={val_fraction}, test_fraction={test_fraction}) gives an empty "
            f"part (train={n - n_test - n_val}, val={n_val}, test={n_test}); use larger n or other fractions."
        )
    perm = np.random.default_rng(seed).permutation(int(n))
    return Split(
        sorted(perm[n_test + n_val :].tolist()),
        sorted(perm[n_test : n_test + n_val].tolist()),
        sorted(perm[:n_test].tolist()),
        meta={"kind": "random", "seed": seed},
    )


def _kmeans_labels(features: np.ndarray, n_clusters: int, seed: int, *, name: str = "n_clusters") -> np.ndarray:
    """K-means labels, shape (n_samples,); ``name`` is the caller's argument that the error messages name."""
    from sklearn.cluster import KMeans

    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
        raise ValueError(f"{name} must be an int >= 2, got {n_clusters!r}.")
    if n_clusters > features.shape[0]:
        raise ValueError(
            f"{name}={n_clusters} exceeds the number of samples ({features.shape[0]}); use fewer clusters."
        )
    km = KMeans(n_clusters=int(n_clusters), n_init=10, random_state=seed)
    return km.fit_predict(features)


def leave_cluster_out_splits(features: Any, *, n_clusters: int, seed: int, val_fraction: float = 0.0) -> list[Split]:
    """All leave-one-cluster-out splits from a single K-means clustering.

    Args:
        features: Descriptor array, shape (n_samples, n_features), e.g. :func:`composition_features`.
            Columns are used as given (scale them first if their units differ).
        n_clusters: Number of K-means clusters (>= 2).
        seed: K-means ``random_state`` and seed of the validation draw.
        val_fraction: Fraction of the non-test samples moved to ``val`` (random, in [0, 1)); 0 gives empty ``val``.

    Returns:
        ``n_clusters`` splits; split ``k`` tests on cluster ``k``. ``meta["cluster_sizes"]`` lists all sizes.
    """
    x = _as_2d_features("features", features)
    seed = _check_seed(seed)
    val_fraction = _check_fraction("val_fraction", val_fraction, allow_zero=True)
    labels = _kmeans_labels(x, n_clusters, seed)
    sizes = np.bincount(labels, minlength=int(n_clusters)).tolist()
    out = []
    for k in range(int(n_clusters)):
        out.append(_cluster_split_from_labels(labels, k, val_fraction, seed, sizes))
    return out


def _cluster_split_from_labels(labels: np.ndarray, k: int, val_fraction: float, seed: int, sizes: list) -> Split:
    test = np.flatnonzero(labels == k)
    rest = np.flatnonzero(labels != k)
    if len(test) == 0 or len(rest) == 0:
        raise ValueError(f"cluster {k} gives an empty test or train set (cluster sizes: {sizes}).")
    train, val = _carve_val(rest, val_fraction, np.random.default_rng(seed), "cluster_split")
    meta = {"kind": "cluster", "test_cluster": k, "seed": seed, "cluster_sizes": sizes}
    return Split(train, val, sorted(test.tolist()), meta=meta)


def cluster_split(features: Any, *, n_clusters: int, test_cluster: int, seed: int, val_fraction: float = 0.0) -> Split:
    """Leave-one-cluster-out split: K-means on a descriptor, hold out one cluster as the test set.

    Args:
        features: Descriptor array, shape (n_samples, n_features), e.g. :func:`composition_features`.
            Columns are used as given (no scaling).
        n_clusters: Number of K-means clusters (>= 2, <= n_samples).
        test_cluster: K-means label of the held-out cluster, in ``range(n_clusters)``. Labels are
            deterministic given ``seed`` but carry no order; see ``meta["cluster_sizes"]``.
        seed: K-means ``random_state`` (``n_init=10``) and seed of the validation draw.
        val_fraction: Fraction of the non-test samples put in ``val`` at random, in [0, 1); 0 gives empty ``val``.

    Returns:
        A :class:`Split` of sorted indices, disjoint and covering ``range(n_samples)``.

    Raises:
        ValueError: Bad ``features`` shape/values, ``n_clusters`` or ``test_cluster`` out of range, empty part.
    """
    x = _as_2d_features("features", features)
    seed = _check_seed(seed)
    val_fraction = _check_fraction("val_fraction", val_fraction, allow_zero=True)
    if isinstance(test_cluster, bool) or not isinstance(test_cluster, (int, np.integer)):
        raise TypeError(f"test_cluster must be an int, got {type(test_cluster).__name__} ({test_cluster!r}).")
    if not 0 <= test_cluster < n_clusters:
        raise ValueError(f"test_cluster must be in range(0, n_clusters={n_clusters}), got {test_cluster}.")
    labels = _kmeans_labels(x, n_clusters, seed)
    sizes = np.bincount(labels, minlength=int(n_clusters)).tolist()
    return _cluster_split_from_labels(labels, int(test_cluster), val_fraction, seed, sizes)


def property_range_split(
    targets: Any,
    *,
    q: float,
    side: Literal["top", "bottom"] = "top",
    val_fraction: float = 0.0,
    seed: int = 0,
    nested: bool = False,
) -> Split:
    """Hold out the samples with the largest (``side="top"``) or smallest target values (prior / label shift).

    Exactly ``round(q * n)`` samples are held out; ties at the threshold are broken by index
    (stable sort), so the split is deterministic.

    With ``nested=True`` the split is the *selection* split of that extrapolation: the ``round(q * n)``
    most extreme samples (the real test set) are first set aside and belong to no part, and the same
    split is then made on what remains (its ``round(q * m)`` most extreme samples, ``m = n - round(q * n)``,
    are the test part, ``val_fraction`` of the rest is validation). Comparing methods on it uses training
    data only, so a choice made there can be checked honestly on the real test set.

    Args:
        targets: Target values, shape (n,), finite.
        q: Fraction of samples held out as test, in (0, 1).
        side: ``"top"`` holds out the largest values, ``"bottom"`` the smallest.
        val_fraction: Fraction of the remaining samples put in ``val`` at random, in [0, 1).
        seed: Seed of the validation draw.
        nested: Make the selection split inside the real split's training part (see above).

    Returns:
        A :class:`Split` of sorted indices; ``meta["threshold"]`` is the least extreme held-out value.
        Nested: ``meta["n_excluded"]`` samples (the real test set) are in no part, and
        ``meta["outer_threshold"]`` is its least extreme value.

    Raises:
        ValueError: ``q`` outside (0, 1), bad ``side``, non-finite targets or an empty part.
        TypeError: ``nested`` is not a bool.

    Example:
        >>> import numpy as np
        >>> y = np.arange(100.0)
        >>> outer = property_range_split(y, q=0.1)
        >>> inner = property_range_split(y, q=0.1, nested=True)
        >>> outer.test[0], inner.test[0], inner.test[-1], inner.meta["n_excluded"]
        (90, 81, 89, 10)
    """
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"targets must be a non-empty 1-D array, got shape {y.shape}.")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"targets contains {int(np.sum(~np.isfinite(y)))} non-finite values.")
    q = _check_fraction("q", q)
    val_fraction = _check_fraction("val_fraction", val_fraction, allow_zero=True)
    seed = _check_seed(seed)
    if side not in ("top", "bottom"):
        raise ValueError(f"side must be 'top' or 'bottom', got {side!r}.")
    if not isinstance(nested, bool):
        raise TypeError(f"nested must be a bool, got {type(nested).__name__} ({nested!r}).")
    order = np.argsort(-y if side == "top" else y, kind="stable")
    meta: dict[str, Any] = {"kind": "property_range", "q": q, "side": side, "seed": seed}
    if nested:
        n_outer = round(q * y.size)
        if n_outer == 0 or n_outer >= y.size:
            raise ValueError(f"q={q} of n={y.size} samples gives an empty test or train set.")
        meta.update(nested=True, n_excluded=int(n_outer), outer_threshold=float(y[order[n_outer - 1]]))
        order = order[n_outer:]
    n_test = round(q * order.size)
    if n_test == 0 or n_test >= order.size:
        what = f"n={y.size} samples"
        if nested:
            what = f"the {order.size} samples left after setting aside the real test set"
        raise ValueError(f"q={q} of {what} gives an empty test or train set.")
    test = order[:n_test]
    rest = order[n_test:]
    train, val = _carve_val(rest, val_fraction, np.random.default_rng(seed), "property_range_split")
    meta["threshold"] = float(y[test[-1]])
    return Split(train, val, sorted(test.tolist()), meta=meta)


def _as_composition(obj: Any) -> Composition:
    from pymatgen.core import Composition

    if isinstance(obj, Composition):
        return obj
    if isinstance(obj, str):
        return Composition(obj)
    comp = getattr(obj, "composition", None)
    if comp is None:
        raise TypeError(
            f"expected a pymatgen Structure/Molecule, Composition or formula string, got {type(obj).__name__}."
        )
    return comp


def chemistry_split(
    structures: Sequence[Structure | Composition | str],
    *,
    elements: str | Iterable[str],
    val_fraction: float = 0.0,
    seed: int = 0,
) -> Split:
    """Hold out every structure that contains any of ``elements`` (chemical-system shift).

    Args:
        structures: Structures (or Compositions / formula strings), length n.
        elements: Element symbol or symbols, e.g. ``"O"`` or ``["Li", "Na"]``.
        val_fraction: Fraction of the remaining structures put in ``val`` at random, in [0, 1).
        seed: Seed of the validation draw.

    Returns:
        A :class:`Split` of sorted indices, disjoint and covering ``range(n)``.

    Raises:
        ValueError: Unknown element symbol, or no / all structures contain the elements.
    """
    from pymatgen.core import Element

    if isinstance(elements, str):
        elements = [elements]
    elements = list(elements)
    if not elements:
        raise ValueError("elements must name at least one element, got an empty list.")
    for el in elements:
        if not isinstance(el, str) or not Element.is_valid_symbol(el):
            raise ValueError(f"elements must be element symbols such as 'O' or 'Li', got {el!r}.")
    val_fraction = _check_fraction("val_fraction", val_fraction, allow_zero=True)
    seed = _check_seed(seed)
    wanted = set(elements)
    hit = np.array([bool(wanted & {e.symbol for e in _as_composition(s).elements}) for s in structures], dtype=bool)
    if hit.size == 0:
        raise ValueError("structures is empty.")
    if not hit.any():
        raise ValueError(f"no structure contains any of elements={elements}; the test set would be empty.")
    if hit.all():
        raise ValueError(f"every structure contains one of elements={elements}; the training set would be empty.")
    train, val = _carve_val(np.flatnonzero(~hit), val_fraction, np.random.default_rng(seed), "chemistry_split")
    return Split(train, val, np.flatnonzero(hit).tolist(), meta={"kind": "chemistry", "elements": elements})


@lru_cache(maxsize=256)
def _element_props(symbol: str) -> tuple[int, float]:
    from pymatgen.core import Element

    el = Element(symbol)
    x = el.X
    return el.Z, (float("nan") if x is None or not np.isfinite(x) else float(x))


def composition_features(structures: Sequence[Structure | Composition | str]) -> np.ndarray:
    """Simple composition descriptor, needing nothing beyond pymatgen.

    Args:
        structures: Structures (or Compositions / formula strings), length n. Element amounts
            are taken from ``composition`` (oxidation states and partial occupancies are fine).

    Returns:
        Array of shape (n, 120), float64, all values in [0, 1]:
        columns 0..117 are atomic fractions of Z = 1..118 (each row sums to 1);
        column 118 is the fraction-weighted mean atomic number / 118;
        column 119 is the fraction-weighted mean Pauling electronegativity / 4
        (elements without a value are left out of that mean; 0 if none has one).
    """
    out = np.zeros((len(structures), N_ELEMENTS + 2), dtype=np.float64)
    for i, s in enumerate(structures):
        comp = _as_composition(s)
        amounts = comp.get_el_amt_dict()
        total = sum(amounts.values())
        if total <= 0:
            raise ValueError(f"structures[{i}] has an empty composition.")
        mean_z = 0.0
        x_sum = 0.0
        x_w = 0.0
        for sym, amt in amounts.items():
            z, x = _element_props(sym)
            frac = amt / total
            out[i, z - 1] += frac
            mean_z += frac * z
            if not np.isnan(x):
                x_sum += frac * x
                x_w += frac
        out[i, N_ELEMENTS] = mean_z / N_ELEMENTS
        out[i, N_ELEMENTS + 1] = (x_sum / x_w / 4.0) if x_w > 0 else 0.0
    return out

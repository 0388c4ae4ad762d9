"""OOD folds (Omee et al. 2024 / MatUQ) and Matbench v0.1 5-fold CV splits."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matgl_cal.datasets._loaders import _check_digest, _read_json_gz, dataset_path, sha256_file
from matgl_cal.datasets._registry import get_dataset_info
from matgl_cal.splits._makers import Split, _check_fraction, _check_seed

__all__ = ["FAMILIES", "MATBENCH_CV", "OODFolds", "load_matbench_cv_folds", "load_ood_folds"]

#: Friendly family names, in report order. The first five are the OFM-based categories of
#: Omee et al. 2024 (50 folds each); ``SOAP_LOCO`` is MatUQ's SOAP leave-one-cluster-out.
FAMILIES: tuple[str, ...] = ("LOCO", "SparseXcluster", "SparseXsingle", "SparseYcluster", "SparseYsingle", "SOAP_LOCO")
#: Family name of the Matbench v0.1 official 5-fold CV splits (:func:`load_matbench_cv_folds`).
MATBENCH_CV = "MatbenchCV"

_OFM_RE = re.compile(r"^OFM_.+_(LOCO|SparseXcluster|SparseXsingle|SparseYcluster|SparseYsingle)_target_clusters\d+$")
_SOAP_RE = re.compile(r"^SOAP_.+_LOCO_target_clusters\d+$")


def _family_of(split_name: str) -> str:
    m = _OFM_RE.match(split_name)
    if m:
        return m.group(1)
    if _SOAP_RE.match(split_name):
        return "SOAP_LOCO"
    return split_name


def _key_sort(k: str) -> tuple[int, int, str]:
    tail = re.search(r"(\d+)$", k)
    return (0, int(tail.group(1)), k) if tail else (1, 0, k)


@dataclass
class OODFolds:
    """Fold definitions of one dataset.

    One task is one ``fold_key`` of one family. Ids are the dataset's ``id`` field (0-based row
    index for Matbench/MatUQ files); map them to positions with ``Split.to_indices(dataset.ids)``.

    Gaps in the source files are filled as ``PROVENANCE.md`` documents:

    * ``train`` missing (perovskites OFM families): ``train = all ids - (val | test)``.
    * ``train`` and ``val`` missing (mp_gap OFM families): ``train = all ids - test`` and ``val = []``
      by default (the original train/val division is unknown). Pass ``val_fraction`` to
      :meth:`get` to draw a deterministic random validation set from that complement instead.

    Attributes:
        name: Dataset name.
        n_entries: Number of dataset entries (ids are ``range(n_entries)``).
        split_names: ``{family: split name in the file}``, e.g.
            ``{"LOCO": "OFM_jdft2d_LOCO_target_clusters50", ...}``.
        meta: The file's ``meta`` (``meta["notes"]`` lists source gaps).
    """

    name: str
    n_entries: int
    split_names: dict[str, str]
    meta: dict[str, Any]
    _splits: dict[str, dict[str, dict[str, list[int]]]] = field(repr=False)

    @property
    def families(self) -> tuple[str, ...]:
        """Available family names (``FAMILIES`` order first, then any unrecognised split names)."""
        known = [f for f in (*FAMILIES, MATBENCH_CV) if f in self.split_names]
        return tuple(known + sorted(f for f in self.split_names if f not in known))

    def _family(self, family: str) -> dict[str, dict[str, list[int]]]:
        if family not in self.split_names:
            # Also accept the raw split name used in the file.
            if family in self.split_names.values():
                return self._splits[family]
            raise ValueError(f"unknown family {family!r} for dataset {self.name!r}; available: {list(self.families)}.")
        return self._splits[self.split_names[family]]

    def fold_keys(self, family: str) -> list[str]:
        """Fold keys of ``family`` (the keys of its test folds), in numeric order."""
        return sorted(self._family(family)["test"], key=_key_sort)

    def missing_parts(self, family: str) -> tuple[str, ...]:
        """Parts (``"train"``, ``"val"``) that the source file lacks for ``family`` and that :meth:`get` derives."""
        parts = self._family(family)
        return tuple(p for p in ("train", "val") if p not in parts)

    def get(self, family: str, fold_key: str | int, *, val_fraction: float | None = None, seed: int = 0) -> Split:
        """The split of one OOD task.

        Args:
            family: Friendly family name (see :attr:`families`) or the raw split name of the file.
            fold_key: Fold key, as str or int (``3`` and ``"3"`` are the same; ``"fold_3"`` for Matbench CV).
            val_fraction: Only used when the file has no ``val`` for this family: fraction of the
                derived training ids moved to ``val`` (random with ``seed``). ``None`` (default) gives
                an empty ``val``. Ignored (with no effect) when the file has a ``val`` part.
            seed: Seed of that validation draw.

        Returns:
            A :class:`~matgl_cal.splits.Split` of sorted dataset ids; ``meta`` records family, fold key and
            which parts were derived.

        Raises:
            ValueError: Unknown family or fold key (the message lists the available ones).
        """
        parts = self._family(family)
        keys = self.fold_keys(family)
        key = str(fold_key)
        if key not in parts["test"]:
            if MATBENCH_CV in self.split_names and f"fold_{key}" in parts["test"]:
                key = f"fold_{key}"
            else:
                raise ValueError(f"unknown fold_key {fold_key!r} for family {family!r}; available: {keys}.")
        test = sorted(parts["test"][key])
        derived = []
        val = sorted(parts["val"].get(key, [])) if "val" in parts else []
        if "train" in parts and key in parts["train"]:
            train = sorted(parts["train"][key])
        else:
            held = set(test) | set(val)
            train = [i for i in range(self.n_entries) if i not in held]
            derived.append("train")
        if "val" not in parts:
            derived.append("val")
            if val_fraction is not None:
                vf = _check_fraction("val_fraction", val_fraction)
                rng = np.random.default_rng(_check_seed(seed))
                n_val = round(vf * len(train))
                if n_val == 0 or n_val >= len(train):
                    raise ValueError(f"val_fraction={vf} of {len(train)} training ids gives an empty part.")
                perm = rng.permutation(np.asarray(train))
                val = sorted(perm[:n_val].tolist())
                train = sorted(perm[n_val:].tolist())
        raw = self.split_names.get(family, family)
        return Split(
            train,
            val,
            test,
            meta={"dataset": self.name, "family": family, "split_name": raw, "fold_key": key, "derived": derived},
        )

    def iter_folds(self, family: str, **kwargs: Any):
        """Yield ``(fold_key, Split)`` for every fold of ``family`` (kwargs go to :meth:`get`)."""
        for key in self.fold_keys(family):
            yield key, self.get(family, key, **kwargs)


def _as_id_lists(obj: Any, where: str, n: int) -> dict[str, list[int]]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a mapping fold_key -> list of ids, got {type(obj).__name__}.")
    out = {}
    for key, ids in obj.items():
        arr = [int(i) for i in ids]
        if arr and (min(arr) < 0 or max(arr) >= n):
            raise ValueError(f"{where}[{key!r}]: ids must lie in range(0, {n}), got min {min(arr)} max {max(arr)}.")
        out[str(key)] = arr
    return out


def _n_entries(name: str, meta: Mapping) -> int:
    n = meta.get("n_entries")
    if isinstance(n, int) and n > 0:
        return n
    raise ValueError(f"fold file of dataset {name!r} lacks meta['n_entries']; cannot derive missing parts.")


def _read_fold_file(name: str, data_dir: str | os.PathLike | None, which: str, verify: bool) -> tuple[Path, Any]:
    """Locate a dataset's ``ood_folds`` or ``cv_folds`` file, check its sha256 (when ``verify``) and parse it."""
    expected = getattr(get_dataset_info(name), which)
    path = dataset_path(name, data_dir=data_dir, which=which)
    if verify and expected is not None:
        _check_digest(str(path), sha256_file(path), expected.sha256)
    return path, _read_json_gz(path)


def load_ood_folds(name: str, *, data_dir: str | os.PathLike | None = None, verify: bool = True) -> OODFolds:
    """Read ``<data_dir>/<name>/<name>_ood_folds.json.gz``.

    Args:
        name: Registered dataset name with OOD folds (matbench_dielectric, matbench_log_gvrh,
            matbench_perovskites, matbench_jdft2d, matbench_mp_gap, jarvis_supercon_3d).
        data_dir: Data directory (argument, else ``$MATGL_CAL_DATA``, else ``~/.cache/matgl_cal/data``).
        verify: Check the file's sha256 against the registry.

    Returns:
        An :class:`OODFolds` with families ``LOCO``, ``SparseXcluster``, ``SparseXsingle``,
        ``SparseYcluster``, ``SparseYsingle`` (50 folds each, keys ``"0"``..``"49"``) and ``SOAP_LOCO``.

    Raises:
        ValueError: Unknown dataset, no fold file for it, malformed file or checksum mismatch.
        FileNotFoundError: The file is missing.
    """
    path, content = _read_fold_file(name, data_dir, "ood_folds", verify)
    if not isinstance(content, dict) or not isinstance(content.get("splits"), dict):
        raise ValueError(f"{path}: expected {{'meta': ..., 'splits': {{split_name: {{part: {{fold_key: ids}}}}}}}}.")
    meta = dict(content.get("meta", {}))
    n = _n_entries(name, meta)
    splits: dict[str, dict[str, dict[str, list[int]]]] = {}
    names: dict[str, str] = {}
    for split_name, parts in content["splits"].items():
        if not isinstance(parts, Mapping) or "test" not in parts:
            raise ValueError(f"{path}: split {split_name!r} has no 'test' part.")
        bad = set(parts) - {"train", "val", "test"}
        if bad:
            raise ValueError(f"{path}: split {split_name!r} has unexpected parts {sorted(bad)}.")
        splits[split_name] = {p: _as_id_lists(v, f"{split_name}.{p}", n) for p, v in parts.items()}
        fam = _family_of(split_name)
        if fam in names:
            raise ValueError(f"{path}: splits {names[fam]!r} and {split_name!r} both map to family {fam!r}.")
        names[fam] = split_name
    return OODFolds(name=name, n_entries=n, split_names=names, meta=meta, _splits=splits)


def load_matbench_cv_folds(name: str, *, data_dir: str | os.PathLike | None = None, verify: bool = True) -> OODFolds:
    """Read the Matbench v0.1 official 5-fold CV splits ``<name>_matbench_v0.1_5fold.json.gz``.

    The result has one family, ``"MatbenchCV"``, with fold keys ``"fold_0"``..``"fold_4"`` (``0``..``4``
    are accepted by :meth:`OODFolds.get`). Matbench defines no validation set: ``val`` is empty unless
    ``get(..., val_fraction=...)`` draws one from the training ids.

    Args:
        name: matbench_dielectric, matbench_log_gvrh, matbench_perovskites, matbench_jdft2d or matbench_mp_gap.
        data_dir: Data directory (see :func:`load_ood_folds`).
        verify: Check the file's sha256 against the registry.

    Returns:
        An :class:`OODFolds` (the container is the same as for OOD folds).
    """
    path, content = _read_fold_file(name, data_dir, "cv_folds", verify)
    if not isinstance(content, dict) or not isinstance(content.get("folds"), dict):
        raise ValueError(f"{path}: expected {{'meta': ..., 'folds': {{fold_k: {{'train': ids, 'test': ids}}}}}}.")
    meta = dict(content.get("meta", {}))
    n = _n_entries(name, meta)
    parts: dict[str, dict[str, list[int]]] = {"train": {}, "test": {}}
    for key, fold in content["folds"].items():
        for p in ("train", "test"):
            if p not in fold:
                raise ValueError(f"{path}: fold {key!r} has no {p!r} list.")
        got = _as_id_lists({key: fold["train"]}, "train", n), _as_id_lists({key: fold["test"]}, "test", n)
        parts["train"].update(got[0])
        parts["test"].update(got[1])
    return OODFolds(
        name=name,
        n_entries=n,
        split_names={MATBENCH_CV: "matbench_v0.1_5fold"},
        meta=meta,
        _splits={"matbench_v0.1_5fold": parts},
    )

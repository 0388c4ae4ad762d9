"""Labelled target-domain data: reading, validation and conversion to MatGL datasets.

A :class:`LabelledData` holds pymatgen structures plus either potential labels (energies, and
optionally forces and stresses) or one scalar property per structure. :func:`read_labelled`
builds one from the forms users have at hand (structures plus an array, ASE ``Atoms``, extxyz,
JSON/JSON.gz and CSV files), :func:`check_elements` checks it against a model's
``element_types`` and :func:`to_mgl_dataset` turns it into a :class:`matgl.graph.data.MGLDataset`.

Units and sign conventions (checked against MatGL 4.1.2 and ASE 3.29):

* energies: eV per structure (total energies, not per atom);
* forces: eV/A, shape ``(n_atoms, 3)`` per structure;
* stresses: **GPa**, shape ``(3, 3)`` per structure, MatGL's convention. MatGL computes stress
  as ``(1/V) dE/d(strain)`` ("compressive-negative", i.e. tensile-positive), which is the *same
  sign* as ASE's ``atoms.get_stress()``; only the unit differs
  (1 eV/A^3 = 160.21766 GPa). VASP's kbar stresses have the opposite sign
  (MatGL's recipe: multiply VASP kbar by -0.1); convert those before passing them here.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pymatgen.core import Structure

if TYPE_CHECKING:
    from collections.abc import Callable

    from ase import Atoms
    from matgl.graph.data import MGLDataset

__all__ = [
    "EV_PER_A3_TO_GPA",
    "LabelledData",
    "check_elements",
    "collate_fn_energy_only",
    "collate_fn_for",
    "read_labelled",
    "to_mgl_dataset",
]

#: 1 eV/A^3 in GPa (same value as ``matgl.utils.constants.EV_PER_ANG3_TO_GPA`` and ASE's units).
EV_PER_A3_TO_GPA = 160.21766208

_STRESS_UNITS = ("eV/A3", "GPa")
_ENERGY_KEYS = ("energy", "energies")
_STRUCTURE_COLUMNS = ("structure", "cif", "poscar")
_MAX_LISTED = 20


def _list_repr(items: Sequence[Any]) -> str:
    """Format a list for an error message, truncated after ``_MAX_LISTED`` entries."""
    items = list(items)
    if len(items) <= _MAX_LISTED:
        return str(items)
    return f"{items[:_MAX_LISTED]} ... ({len(items)} in total)"


def _as_float_vector(values: Any, name: str, n: int) -> np.ndarray:
    """Convert labels to a finite float64 vector of length ``n`` or raise ``ValueError``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be numeric; could not convert it to floats ({err}).") from err
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be one value per structure, shape ({n},); got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise ValueError(f"`{name}` must have one value per structure ({n} structures); got {arr.shape[0]} values.")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"`{name}` must be finite; NaN/inf at indices {_list_repr(bad.tolist())}.")
    return arr


@dataclass
class LabelledData:
    """Structures with potential labels (energies[, forces, stresses]) or property targets.

    Exactly one of ``energies`` (a potential data set) or ``targets`` (a property data set) must be
    given. Arrays are validated and converted to float64 in ``__post_init__``.

    Attributes:
        structures: pymatgen ``Structure`` objects, length n.
        energies: Total energies in eV per structure, shape (n,), or None.
        forces: Forces in eV/A, one array of shape (n_atoms_i, 3) per structure, or None.
        stresses: Stresses in GPa, MatGL sign convention (tensile-positive, same sign as ASE),
            shape (n, 3, 3), or None.
        targets: One scalar property value per structure, shape (n,), or None.
        groups: Optional per-structure labels (e.g. composition family, source), shape (n,).
        target_name: Name of the property in ``targets`` (informational), or None.
    """

    structures: list[Structure]
    energies: np.ndarray | None = None
    forces: list[np.ndarray] | None = None
    stresses: np.ndarray | None = None
    targets: np.ndarray | None = None
    groups: np.ndarray | None = None
    target_name: str | None = field(default=None)

    def __post_init__(self) -> None:
        """Validate shapes, finiteness and consistency of the labels."""
        if isinstance(self.structures, Structure) or not isinstance(self.structures, Sequence):
            raise TypeError(
                f"`structures` must be a list of pymatgen Structure objects; got {type(self.structures).__name__}."
            )
        self.structures = list(self.structures)
        n = len(self.structures)
        if n == 0:
            raise ValueError("`structures` must contain at least one structure; got an empty list.")
        wrong = [i for i, s in enumerate(self.structures) if not isinstance(s, Structure)]
        if wrong:
            kinds = sorted({type(self.structures[i]).__name__ for i in wrong})
            raise TypeError(
                "`structures` must contain only pymatgen Structure objects; "
                f"got {kinds} at indices {_list_repr(wrong)}."
            )
        if (self.energies is None) == (self.targets is None):
            raise ValueError(
                "Exactly one of `energies` (potential data) or `targets` (property data) must be provided; got "
                + ("both." if self.energies is not None else "neither.")
            )
        if self.energies is not None:
            self.energies = _as_float_vector(self.energies, "energies", n)
        if self.targets is not None:
            self.targets = _as_float_vector(self.targets, "targets", n)
            if self.forces is not None or self.stresses is not None:
                raise ValueError(
                    "`forces` and `stresses` are potential labels and need `energies`; got them with `targets`."
                )
        if self.forces is not None:
            if len(self.forces) != n:
                raise ValueError(
                    f"`forces` must have one (n_atoms, 3) array per structure ({n} structures); "
                    f"got {len(self.forces)} arrays."
                )
            forces = []
            for i, (f, s) in enumerate(zip(self.forces, self.structures, strict=True)):
                arr = np.asarray(f, dtype=np.float64)
                if arr.shape != (len(s), 3):
                    raise ValueError(
                        f"`forces[{i}]` must have shape ({len(s)}, 3) to match structure {i} "
                        f"({len(s)} atoms); got shape {arr.shape}."
                    )
                forces.append(arr)
            bad = [i for i, f in enumerate(forces) if not np.all(np.isfinite(f))]
            if bad:
                raise ValueError(f"`forces` must be finite; NaN/inf in structures {_list_repr(bad)}.")
            self.forces = forces
        if self.stresses is not None:
            arr = np.asarray(self.stresses, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] == 6:
                from ase.stress import voigt_6_to_full_3x3_stress

                arr = voigt_6_to_full_3x3_stress(arr)
            if arr.shape != (n, 3, 3):
                raise ValueError(
                    f"`stresses` must have shape ({n}, 3, 3) (or ({n}, 6) Voigt) in GPa; got shape {arr.shape}."
                )
            bad = np.flatnonzero(~np.all(np.isfinite(arr.reshape(n, -1)), axis=1))
            if bad.size:
                raise ValueError(f"`stresses` must be finite; NaN/inf in structures {_list_repr(bad.tolist())}.")
            self.stresses = arr
        if self.groups is not None:
            groups = np.asarray(self.groups)
            if groups.shape != (n,):
                raise ValueError(f"`groups` must have one label per structure, shape ({n},); got shape {groups.shape}.")
            self.groups = groups

    @property
    def kind(self) -> Literal["potential", "property"]:
        """``"potential"`` when the labels are energies, ``"property"`` when they are targets."""
        return "potential" if self.energies is not None else "property"

    @property
    def labels(self) -> np.ndarray:
        """The scalar label per structure: energies (eV) for potentials, targets otherwise; shape (n,)."""
        return self.energies if self.energies is not None else self.targets  # type: ignore[return-value]

    @property
    def n_atoms(self) -> np.ndarray:
        """Number of atoms per structure, shape (n,), int."""
        return np.array([len(s) for s in self.structures], dtype=np.int64)

    def __len__(self) -> int:
        """Number of structures."""
        return len(self.structures)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledData:
        """Return a new :class:`LabelledData` with the selected structures (labels copied).

        Args:
            indices: Integer indices (any order, repeats allowed) or a boolean mask of length n.

        Returns:
            The subset, same kind as ``self``.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"Boolean `indices` must have shape ({len(self)},); got shape {idx.shape}.")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"`indices` must be a 1-D sequence of ints or a boolean mask; got dtype {idx.dtype}.")
        out_of_range = idx[(idx < -len(self)) | (idx >= len(self))]
        if out_of_range.size:
            raise IndexError(
                f"`indices` must lie in [-{len(self)}, {len(self)}); got {_list_repr(out_of_range.tolist())}."
            )
        idx_list = idx.tolist()

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else np.array(arr[idx], copy=True)

        return LabelledData(
            structures=[self.structures[i] for i in idx_list],
            energies=pick(self.energies),
            forces=None if self.forces is None else [self.forces[i].copy() for i in idx_list],
            stresses=pick(self.stresses),
            targets=pick(self.targets),
            groups=pick(self.groups),
            target_name=self.target_name,
        )


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _stress_factor(stress_unit: str) -> float:
    """Factor converting ``stress_unit`` to GPa (same sign: ASE and MatGL agree)."""
    if stress_unit not in _STRESS_UNITS:
        raise ValueError(f"`stress_unit` must be one of {list(_STRESS_UNITS)}; got {stress_unit!r}.")
    return EV_PER_A3_TO_GPA if stress_unit == "eV/A3" else 1.0


def _to_3x3(stress: Any, where: str) -> np.ndarray:
    arr = np.asarray(stress, dtype=np.float64)
    if arr.shape == (6,):
        from ase.stress import voigt_6_to_full_3x3_stress

        return voigt_6_to_full_3x3_stress(arr)
    if arr.size == 9:
        return arr.reshape(3, 3)
    raise ValueError(f"{where} must have 6 (Voigt) or 9 values; got shape {arr.shape}.")


def _is_energy_key(target_key: str | None) -> bool:
    return target_key is None or target_key in _ENERGY_KEYS


def _resolve_groups(groups: Any, group_values: list | None, n: int) -> np.ndarray | None:
    if groups is not None:
        return np.asarray(groups)
    if group_values is not None:
        return np.asarray(group_values)
    return None


def _from_structures(
    structures: list[Structure],
    labels: Any,
    target_key: str | None,
    factor: float,
    groups: Any,
) -> LabelledData:
    """Structures plus a separate label array or mapping."""
    n = len(structures)
    if labels is None:
        raise ValueError(
            "`labels` must be provided when `source` is a list of pymatgen Structures "
            "(energies in eV per structure, or property values with `target_key`); got None."
        )
    if isinstance(labels, Mapping):
        keys = list(labels)
        energy_key = next((k for k in _ENERGY_KEYS if k in labels), None)
        if _is_energy_key(target_key):
            if energy_key is None:
                raise ValueError(f"`labels` must contain an 'energy' or 'energies' entry; available keys: {keys}.")
            stress = next((labels[k] for k in ("stresses", "stress") if k in labels), None)
            stresses = None
            if stress is not None:
                if len(stress) != n:
                    raise ValueError(
                        f"`labels['stresses']` must have {n} entries (one per structure); got {len(stress)}."
                    )
                stresses = np.stack([_to_3x3(s, f"`labels['stresses'][{i}]`") for i, s in enumerate(stress)]) * factor
            return LabelledData(
                structures=structures,
                energies=labels[energy_key],
                forces=labels.get("forces"),
                stresses=stresses,
                groups=groups,
            )
        if target_key not in labels:
            raise ValueError(f"`labels` has no entry for `target_key`={target_key!r}; available keys: {keys}.")
        return LabelledData(structures=structures, targets=labels[target_key], groups=groups, target_name=target_key)
    if _is_energy_key(target_key):
        return LabelledData(structures=structures, energies=labels, groups=groups)
    return LabelledData(structures=structures, targets=labels, groups=groups, target_name=target_key)


def _atoms_value(atoms: Atoms, key: str, *, per_atom: bool) -> Any:
    """Look a label up in the calculator results, then ``arrays`` (per-atom) or ``info``."""
    results = getattr(getattr(atoms, "calc", None), "results", None) or {}
    if key in results:
        return results[key]
    if per_atom and key in atoms.arrays:
        return atoms.arrays[key]
    if key in atoms.info:
        return atoms.info[key]
    return None


def _from_atoms(
    frames: Sequence[Atoms],
    target_key: str | None,
    factor: float,
    groups: Any,
    group_key: str | None,
    origin: str,
) -> LabelledData:
    """ASE ``Atoms`` with labels in a (SinglePoint)Calculator, ``info`` or ``arrays``."""
    from pymatgen.io.ase import AseAtomsAdaptor

    adaptor = AseAtomsAdaptor()
    structures: list[Structure] = []
    values: list[Any] = []
    forces: list[Any] = []
    stresses: list[Any] = []
    group_values: list[Any] | None = [] if group_key is not None else None
    key: str = "energy" if target_key is None or _is_energy_key(target_key) else target_key
    for i, atoms in enumerate(frames):
        if not all(atoms.pbc):
            raise ValueError(
                f"{origin}: frame {i} must be fully periodic (pbc=True with a cell) to become a pymatgen "
                f"Structure; got pbc={atoms.pbc.tolist()}."
            )
        structures.append(adaptor.get_structure(atoms))
        value = _atoms_value(atoms, key, per_atom=False)
        if value is None and key == "energy":
            value = atoms.info.get("energies")
        if value is None:
            results = getattr(getattr(atoms, "calc", None), "results", None) or {}
            available = sorted(set(results) | set(atoms.info))
            raise ValueError(
                f"{origin}: frame {i} has no {key!r} label in its calculator results or `info`; "
                f"available keys: {available}."
            )
        values.append(float(np.asarray(value).squeeze()))
        if key == "energy":
            forces.append(_atoms_value(atoms, "forces", per_atom=True))
            stresses.append(_atoms_value(atoms, "stress", per_atom=False))
        if group_values is not None:
            if group_key not in atoms.info:
                raise ValueError(
                    f"{origin}: frame {i} has no `group_key`={group_key!r} in `info`; "
                    f"available keys: {sorted(atoms.info)}."
                )
            group_values.append(atoms.info[group_key])
    groups_arr = _resolve_groups(groups, group_values, len(structures))
    return _assemble(structures, values, forces, stresses, groups_arr, key, key == "energy", factor, origin, "frame")


def _all_or_none(values: list[Any], name: str, origin: str) -> list[Any] | None:
    missing = [i for i, v in enumerate(values) if v is None]
    if len(missing) == len(values):
        return None
    if missing:
        raise ValueError(
            f"{origin}: {name!r} labels must be present for every frame or for none; "
            f"missing in frames {_list_repr(missing)}."
        )
    return values


def _parse_structure(value: Any, where: str) -> Structure:
    """Parse a structure given as a pymatgen dict, a JSON string, a CIF or a POSCAR string."""
    if isinstance(value, Structure):
        return value
    if isinstance(value, Mapping):
        try:
            return Structure.from_dict(value)
        except Exception as err:
            raise ValueError(f"{where}: not a valid pymatgen Structure dict ({err}).") from err
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            return _parse_structure(json.loads(text), where)
        errors = []
        for fmt in ("cif", "poscar"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # pymatgen's CIF parser warns on every failed attempt
                    return Structure.from_str(text, fmt=fmt)
            except Exception as err:
                errors.append(f"{fmt}: {err}")
        raise ValueError(f"{where}: could not parse the string as a CIF or POSCAR ({'; '.join(errors)}).")
    raise ValueError(
        f"{where}: expected a pymatgen Structure dict or a CIF/POSCAR/JSON string; got {type(value).__name__}."
    )


def _from_records(
    records: Sequence[Mapping[str, Any]],
    target_key: str | None,
    factor: float,
    groups: Any,
    group_key: str | None,
    origin: str,
) -> LabelledData:
    """Records (dicts) with a structure entry and the label entries."""
    key = "energy" if target_key is None else target_key
    structures: list[Structure] = []
    values: list[Any] = []
    forces: list[Any] = []
    stresses: list[Any] = []
    group_values: list[Any] | None = [] if group_key is not None else None
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise ValueError(f"{origin}: record {i} must be a mapping; got {type(rec).__name__}.")
        col = next((c for c in _STRUCTURE_COLUMNS if c in rec), None)
        if col is None:
            raise ValueError(
                f"{origin}: record {i} needs one of the structure keys {list(_STRUCTURE_COLUMNS)}; "
                f"available keys: {sorted(rec)}."
            )
        structures.append(_parse_structure(rec[col], f"{origin}: record {i} key {col!r}"))
        if key not in rec:
            raise ValueError(f"{origin}: record {i} has no target key {key!r}; available keys: {sorted(rec)}.")
        value = rec[key]
        values.append(float("nan") if value is None else value)
        if _is_energy_key(key):
            forces.append(rec.get("forces"))
            stresses.append(rec.get("stresses", rec.get("stress")))
        if group_values is not None:
            if group_key not in rec:
                raise ValueError(
                    f"{origin}: record {i} has no `group_key`={group_key!r}; available keys: {sorted(rec)}."
                )
            group_values.append(rec[group_key])
    groups_arr = _resolve_groups(groups, group_values, len(structures))
    return _assemble(
        structures, values, forces, stresses, groups_arr, key, _is_energy_key(key), factor, origin, "record"
    )


def _assemble(
    structures: list[Structure], values: Any, forces: list[Any], stresses: list[Any], groups: Any, key: str,
    energy: bool, factor: float, origin: str, item: str,
) -> LabelledData:
    """LabelledData from per-item lists collected by the Atoms and record readers."""
    if not energy:
        return LabelledData(structures=structures, targets=values, groups=groups, target_name=key)
    forces_out = _all_or_none(forces, "forces", origin)
    stress_list = _all_or_none(stresses, "stress", origin)
    stresses_out = (
        None
        if stress_list is None
        else np.stack([_to_3x3(s, f"{origin}: stress of {item} {i}") for i, s in enumerate(stress_list)]) * factor
    )
    return LabelledData(structures=structures, energies=values, forces=forces_out, stresses=stresses_out, groups=groups)


def _read_file(path: Path, target_key: str | None, factor: float, groups: Any, group_key: str | None) -> LabelledData:
    if not path.exists():
        raise FileNotFoundError(f"`source` file does not exist: {str(path)!r}.")
    if not path.is_file():
        raise ValueError(f"`source` must be a file; got a directory or special file: {str(path)!r}.")
    name = path.name.lower()
    origin = f"file {str(path)!r}"
    if name.endswith((".json", ".json.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(path, "rt") as f:  # type: ignore[operator]
                records = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"Could not read {origin} as JSON ({err}).") from err
        if isinstance(records, Mapping):
            # Accept a column-oriented dict {key: [values...]} (pandas "list" orient) too.
            lengths = {len(v) for v in records.values() if isinstance(v, list)}
            if len(lengths) != 1:
                raise ValueError(
                    f"{origin} must hold a list of records (dicts); got a dict with keys {sorted(records)}."
                )
            n = lengths.pop()
            records = [{k: v[i] for k, v in records.items()} for i in range(n)]
        if not isinstance(records, list) or not records:
            raise ValueError(f"{origin} must hold a non-empty list of records (dicts); got {type(records).__name__}.")
        return _from_records(records, target_key, factor, groups, group_key, origin)
    if name.endswith((".csv", ".csv.gz")):
        import pandas as pd

        try:
            frame = pd.read_csv(path)
        except Exception as err:
            raise ValueError(f"Could not read {origin} as CSV ({err}).") from err
        if frame.empty:
            raise ValueError(f"{origin} must contain at least one row; got none.")
        frame.columns = [str(c) for c in frame.columns]
        lower = {c.lower(): c for c in frame.columns}
        col = next((lower[c] for c in _STRUCTURE_COLUMNS if c in lower), None)
        if col is None:
            raise ValueError(
                f"{origin} needs a structure column named one of {list(_STRUCTURE_COLUMNS)} (CIF, POSCAR or "
                f"pymatgen JSON strings); available columns: {list(frame.columns)}."
            )
        key = "energy" if target_key is None else target_key
        if key not in frame.columns:
            raise ValueError(f"{origin} has no target column {key!r}; available columns: {list(frame.columns)}.")
        records = [{"structure": s, key: v} for s, v in zip(frame[col], frame[key], strict=True)]
        if group_key is not None:
            if group_key not in frame.columns:
                raise ValueError(
                    f"{origin} has no `group_key` column {group_key!r}; available columns: {list(frame.columns)}."
                )
            for rec, g in zip(records, frame[group_key], strict=True):
                rec[group_key] = g
        return _from_records(records, key, factor, groups, group_key, origin)
    # Anything else goes through ASE's format detection (extxyz, traj, vasprun.xml, OUTCAR, ...).
    import ase.io

    try:
        frames = ase.io.read(path, index=":")
    except Exception as err:
        raise ValueError(
            f"Could not read {origin}: expected extxyz (or another ASE-readable format), JSON/JSON.gz or CSV ({err})."
        ) from err
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise ValueError(f"{origin} contains no structures.")
    return _from_atoms(frames, target_key, factor, groups, group_key, origin)


def read_labelled(
    source: Any,
    *,
    labels: Any = None,
    target_key: str | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    group_key: str | None = None,
    stress_unit: Literal["eV/A3", "GPa"] = "eV/A3",
) -> LabelledData:
    """Read labelled structures from the common in-memory and file forms.

    ``target_key`` decides the kind: ``None``, ``"energy"`` or ``"energies"`` read potential labels
    (total energy in eV per structure, plus forces in eV/A and stresses when present); any other
    key reads one scalar property per structure.

    Accepted ``source`` forms:

    * a :class:`LabelledData` (returned unchanged; ``labels``, ``groups``, ``group_key`` must be None);
    * a list of pymatgen ``Structure`` plus ``labels``: an array of shape (n,), or a mapping with
      ``"energy"``/``"energies"``, optional ``"forces"`` and ``"stress"``/``"stresses"`` entries
      (or the ``target_key`` entry for properties);
    * a list of ASE ``Atoms``: energies/forces/stresses from ``atoms.calc.results``
      (e.g. a ``SinglePointCalculator``; nothing is recomputed) or ``atoms.info["energy"]``,
      ``atoms.arrays["forces"]``, ``atoms.info["stress"]``; a property from ``atoms.info[target_key]``;
    * a list of records (dicts) with a ``"structure"`` (pymatgen dict or CIF/POSCAR/JSON string),
      ``"cif"`` or ``"poscar"`` entry and the label entry (default ``"energy"``);
    * a MatGL ``MGLDataset`` built from structures (its ``structures`` and ``labels``: ``"energies"``,
      ``"forces"``, ``"stresses"`` in MatGL's GPa, or one property key);
    * a path (``str``/``Path``) to a JSON or JSON.gz file holding such records, a CSV file with a
      ``structure``/``cif``/``poscar`` column and the target column, or any file ``ase.io.read``
      understands (extxyz, traj, ...), read with ``index=":"``.

    Args:
        source: The data, see above.
        labels: Labels for a list of structures; must be None for the other forms.
        target_key: Label name; see above.
        groups: Optional per-structure group labels, shape (n,).
        group_key: Name of a per-record entry (or ``atoms.info`` key, or CSV column) holding the
            group label. At most one of ``groups`` or ``group_key`` may be given.
        stress_unit: Unit of stresses in the source, ``"eV/A3"`` (ASE, extxyz) or ``"GPa"``. Both
            use the tensile-positive sign of ASE and MatGL; stresses are stored in GPa.

    Returns:
        The validated :class:`LabelledData`.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        TypeError: ``source`` has an unsupported type.
        ValueError: Empty data, non-finite labels, inconsistent shapes or lengths, missing keys,
            unreadable files or an unsupported ``stress_unit``.
    """
    factor = _stress_factor(stress_unit)
    if groups is not None and group_key is not None:
        raise ValueError("At most one of `groups` or `group_key` may be provided; got both.")
    if isinstance(source, LabelledData):
        if labels is not None or groups is not None or group_key is not None:
            raise ValueError(
                "`labels`, `groups` and `group_key` must be None when `source` is already a LabelledData; "
                "got at least one of them set."
            )
        return source
    if isinstance(source, Structure):
        raise TypeError("`source` must be a list of structures, not a single Structure; wrap it in a list.")
    if labels is not None and not _is_structure_list(source):
        raise ValueError(
            "`labels` is only used with a list of pymatgen Structures; "
            f"got `labels` together with a `source` of type {type(source).__name__}."
        )
    if isinstance(source, str | Path):
        return _read_file(Path(source), target_key, factor, groups, group_key)
    if _is_mgl_dataset(source):
        return _from_mgl_dataset(source, target_key, groups)
    if isinstance(source, Sequence | np.ndarray) and not isinstance(source, str | bytes):
        items = list(source)
        if not items:
            raise ValueError("`source` must contain at least one structure; got an empty sequence.")
        from ase import Atoms

        if all(isinstance(x, Structure) for x in items):
            if group_key is not None:
                raise ValueError("`group_key` needs records, Atoms or a file; use `groups=` with a list of Structures.")
            return _from_structures(items, labels, target_key, factor, groups)
        if all(isinstance(x, Atoms) for x in items):
            return _from_atoms(items, target_key, factor, groups, group_key, "`source`")
        if all(isinstance(x, Mapping) for x in items):
            return _from_records(items, target_key, factor, groups, group_key, "`source`")
        kinds = sorted({type(x).__name__ for x in items})
        raise TypeError(
            "`source` must be a list of only pymatgen Structures, only ASE Atoms or only dict records; "
            f"got element types {kinds}."
        )
    raise TypeError(
        "`source` must be a LabelledData, a list of Structures/Atoms/records or a path to an extxyz/JSON/CSV file; "
        f"got {type(source).__name__}."
    )


def _is_mgl_dataset(source: Any) -> bool:
    from matgl.graph.data import MGLDataset

    return isinstance(source, MGLDataset)


def _from_mgl_dataset(dataset: Any, target_key: str | None, groups: Any) -> LabelledData:
    """LabelledData from an ``MGLDataset`` that still holds its structures (MatGL stresses are in GPa)."""
    structures = list(getattr(dataset, "structures", None) or [])
    if not structures:
        raise ValueError(
            "`source` is an MGLDataset without structures (e.g. loaded from a cache); pass the structures and "
            "labels instead (read_labelled(structures, labels=...))."
        )
    labels = dict(dataset.labels)
    if "energies" in labels:
        mapping = {"energies": labels["energies"]}
        if "forces" in labels:
            mapping["forces"] = labels["forces"]
        if "stresses" in labels:
            mapping["stresses"] = labels["stresses"]
        return _from_structures(structures, mapping, None, _stress_factor("GPa"), groups)
    keys = list(labels)
    key = target_key if target_key is not None else (keys[0] if len(keys) == 1 else None)
    if key is None or key not in labels:
        raise ValueError(f"`target_key` must name one of the MGLDataset's labels {keys}; got {target_key!r}.")
    return _from_structures(structures, np.asarray(labels[key], dtype=float), key, 1.0, groups)


def _is_structure_list(source: Any) -> bool:
    return (
        isinstance(source, Sequence) and not isinstance(source, str) and any(isinstance(x, Structure) for x in source)
    )


# --------------------------------------------------------------------------------------------
# Checks and conversion
# --------------------------------------------------------------------------------------------


def check_elements(data: LabelledData | Sequence[Structure], element_types: Sequence[str], *,
                   name: str = "structures") -> None:
    """Raise if any structure contains an element the model does not know.

    Args:
        data: The labelled data, or the structures alone.
        element_types: The model's element list (``model.element_types``).
        name: The argument ``data`` came from, named in the error (e.g. ``"target"``, ``"eval_source"``).

    Raises:
        ValueError: Listing the offending elements and the indices of the structures holding them.
    """
    known = set(element_types)
    offending: dict[str, list[int]] = {}
    structures = data.structures if isinstance(data, LabelledData) else data
    for i, s in enumerate(structures):
        for el in s.composition.get_el_amt_dict():
            if el not in known:
                offending.setdefault(el, []).append(i)
    if offending:
        detail = "; ".join(f"{el} in structures {_list_repr(idx)}" for el, idx in sorted(offending.items()))
        raise ValueError(
            f"`{name}` must contain only elements in the model's `element_types` ({len(known)} elements); "
            f"got elements absent from it: {sorted(offending)} ({detail})."
        )


def to_mgl_dataset(
    data: LabelledData,
    *,
    element_types: Sequence[str],
    cutoff: float,
    include_forces: bool | None = None,
    include_stresses: bool | None = None,
) -> MGLDataset:
    """Convert labelled data into an in-memory MatGL ``MGLDataset`` (nothing is written to disk).

    Label keys: potential data gets ``"energies"`` (eV per structure), and, when included,
    ``"forces"`` (eV/A, (n_atoms, 3)) and ``"stresses"`` (GPa, (3, 3), MatGL sign); property data
    gets a single ``"target"`` key. Energy-only potential data has only ``"energies"``; no dummy
    force labels are stored. MatGL's ``MGLDataLoader`` would then pick the property collate
    function, so pass ``collate_fn=collate_fn_for(dataset)`` to the loader (it works for every
    dataset this function returns).

    Args:
        data: The labelled data.
        element_types: The model's ``element_types`` (positional: node types index into it).
        cutoff: Graph cutoff radius in A (the model's ``cutoff``).
        include_forces: Store force labels; default: when ``data.forces`` is present.
        include_stresses: Store stress labels; default: when ``data.stresses`` is present.

    Returns:
        The dataset (``save_cache=False``; graphs built in a temporary directory that is removed).

    Raises:
        ValueError: Unknown elements, or forces/stresses requested but absent or for property data.
    """
    import tempfile

    from matgl.ext.pymatgen import Structure2Graph
    from matgl.graph.data import MGLDataset

    if not isinstance(data, LabelledData):
        raise TypeError(f"`data` must be a LabelledData (see read_labelled); got {type(data).__name__}.")
    if not (isinstance(cutoff, int | float) and math.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"`cutoff` must be a positive number in A; got {cutoff!r}.")
    element_types = tuple(element_types)
    check_elements(data, element_types)
    if data.kind == "property":
        if include_forces or include_stresses:
            raise ValueError(
                "`include_forces`/`include_stresses` need potential data (energies); got property data "
                f"(target {data.target_name!r})."
            )
        labels: dict[str, list] = {"target": data.targets.tolist()}  # type: ignore[union-attr]
    else:
        include_forces = data.forces is not None if include_forces is None else include_forces
        include_stresses = data.stresses is not None if include_stresses is None else include_stresses
        if include_forces and data.forces is None:
            raise ValueError("`include_forces=True` needs force labels; got data without forces.")
        if include_stresses and data.stresses is None:
            raise ValueError("`include_stresses=True` needs stress labels; got data without stresses.")
        labels = {"energies": data.energies.tolist()}  # type: ignore[union-attr]
        if include_forces:
            labels["forces"] = [f.tolist() for f in data.forces]  # type: ignore[union-attr]
        if include_stresses:
            labels["stresses"] = data.stresses.tolist()  # type: ignore[union-attr]
    converter = Structure2Graph(element_types=element_types, cutoff=float(cutoff))
    # MGLDataset (PyG Dataset) creates `<root>/processed` even with save_cache=False and prints
    # "Processing..." plus a progress bar to stderr: build it in a throw-away directory and keep
    # stderr quiet, re-emitting any genuine warnings.
    with (
        tempfile.TemporaryDirectory(prefix="matgl_cal_ds_") as root,
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("default")
        dataset = MGLDataset(
            structures=list(data.structures),
            converter=converter,
            labels=labels,
            save_cache=False,
            root=root,
        )
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return dataset


def collate_fn_energy_only(batch: list, include_stress: bool = False) -> tuple:
    """Collate energy-only potential samples into the batch layout MatGL's potential modules expect.

    Returns ``(g, lat, state_attr, energies, forces, stresses)`` like
    :func:`matgl.graph.data.collate_fn_pes`. ``forces`` is a zero placeholder of shape
    (n_atoms, 3) because ``PotentialLightningModule`` always unpacks one: train with
    ``force_weight=0`` so that it contributes exactly zero to the loss (NaN placeholders would
    make ``0 * NaN = NaN``), and ignore the logged force metrics. ``stresses`` is (3*B, 3) in GPa
    when ``include_stress`` is True, else a (B,) zero placeholder.

    Args:
        batch: List of dataset items ``(graph, lattice, state_attr, labels)``.
        include_stress: Whether the labels hold ``"stresses"``.

    Returns:
        The batch tuple.
    """
    import matgl
    from torch_geometric.data import Batch

    graphs, lattices, state_attr, labels = map(list, zip(*batch, strict=True))
    g = Batch.from_data_list(graphs)
    e = torch.tensor([float(d["energies"]) for d in labels], dtype=matgl.float_th)
    f = torch.zeros((g.num_nodes, 3), dtype=matgl.float_th)
    s = (
        torch.vstack([d["stresses"] for d in labels])
        if include_stress
        else torch.zeros(e.size(0), dtype=matgl.float_th)
    )
    lat = lattices[0] if len(graphs) == 1 else torch.squeeze(torch.stack(lattices))
    return g, lat.squeeze(), torch.stack(state_attr), e, f, s


def collate_fn_for(dataset: Any) -> Callable[[list], tuple]:
    """Pick the collate function matching a dataset built by :func:`to_mgl_dataset`.

    Args:
        dataset: An ``MGLDataset`` (or a ``torch.utils.data.Subset`` of one).

    Returns:
        ``collate_fn_graph`` for property data, ``collate_fn_pes`` (with stresses when labelled)
        for data with forces, :func:`collate_fn_energy_only` for energy-only potential data.
    """
    from matgl.graph.data import collate_fn_graph, collate_fn_pes
    from torch.utils.data import Subset

    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    keys = set(getattr(base, "labels", {}) or {})
    if not keys:
        raise ValueError(f"`dataset` must carry labels (an MGLDataset from to_mgl_dataset); got {type(base).__name__}.")
    include_stress = "stresses" in keys
    if "forces" in keys:
        return partial(collate_fn_pes, include_stress=include_stress)
    if "energies" in keys:
        return partial(collate_fn_energy_only, include_stress=include_stress)
    return collate_fn_graph

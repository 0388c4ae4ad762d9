"""Locating, fetching, verifying and parsing dataset files into :class:`StructureDataset`."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import pickle
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matgl_cal.datasets._registry import DataFile, DatasetInfo, get_dataset_info

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "CACHE_ENV_VAR",
    "DATA_ENV_VAR",
    "StructureDataset",
    "dataset_path",
    "load_dataset",
    "resolve_cache_dir",
    "resolve_data_dir",
    "sha256_file",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the data directory (e.g. ``../shared/data``).
DATA_ENV_VAR = "MATGL_CAL_DATA"
#: Environment variable naming the cache directory (parsed structures, graphs).
CACHE_ENV_VAR = "MATGL_CAL_CACHE"
#: Set to ``1`` to never try a download.
OFFLINE_ENV_VAR = "MATGL_CAL_OFFLINE"

_PARSE_CACHE_VERSION = 1
_DOWNLOAD_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------- directories


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache root directory.

    Resolution order: ``cache_dir``, else ``$MATGL_CAL_CACHE``, else ``$XDG_CACHE_HOME/matgl_cal``,
    else ``~/.cache/matgl_cal``.

    Parsed structures go to ``<root>/structures``, graphs to ``<root>/graphs``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "matgl_cal"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Data directory.

    Resolution order: ``data_dir``, else ``$MATGL_CAL_DATA``, else ``<cache root>/data``
    (see :func:`resolve_cache_dir`).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return resolve_cache_dir() / "data"


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _check_digest(what: str, actual: str, expected: str | None) -> None:
    if expected is not None and not actual.startswith(expected):
        raise ValueError(
            f"checksum mismatch for {what}: expected sha256 starting with {expected}, got {actual}. "
            "The file is corrupt or a different version; delete it (it is fetched again where a URL exists) "
            "or pass verify=False to use it anyway."
        )


def _download(url: str, dest: Path, expected_sha256: str | None) -> None:
    """Download ``url`` to a temp file next to ``dest``, verify it, then move it into place atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        logger.info("Downloading %s -> %s", url, dest)
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                h.update(chunk)
        _check_digest(f"download of {url}", h.hexdigest(), expected_sha256)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _missing_message(info_name: str, path: Path, reason: str) -> str:
    return (
        f"data file for dataset {info_name!r} not found at {path} ({reason}). Point the loader at the folder "
        f"that holds {path.parent.name}/{path.name}: pass data_dir=..., or set the environment variable "
        f"{DATA_ENV_VAR} (e.g. export {DATA_ENV_VAR}=../shared/data)."
    )


def dataset_path(
    name: str, *, data_dir: str | os.PathLike | None = None, which: str = "data", download: bool = True
) -> Path:
    """Local path of a registered file, downloading it first where a URL exists and the machine is online.

    Args:
        name: Registered dataset name.
        data_dir: Data directory (see :func:`resolve_data_dir`).
        which: ``"data"``, ``"ood_folds"`` or ``"cv_folds"``.
        download: Allow a download when the file is missing (also disabled by ``MATGL_CAL_OFFLINE=1``).

    Returns:
        Path to the existing file.

    Raises:
        ValueError: Unknown dataset or ``which``, or the dataset has no such file.
        FileNotFoundError: The file is missing and cannot be downloaded (the message says why and
            how to set ``MATGL_CAL_DATA``).
    """
    info = get_dataset_info(name)
    files = {"data": info.file, "ood_folds": info.ood_folds, "cv_folds": info.cv_folds}
    if which not in files:
        raise ValueError(f"which must be one of {sorted(files)}, got {which!r}.")
    df: DataFile | None = files[which]
    if df is None:
        have = sorted(k for k, v in files.items() if v is not None)
        raise ValueError(f"dataset {name!r} has no {which} file; it has: {have}.")
    path = resolve_data_dir(data_dir) / df.path
    if path.is_file():
        return path
    if df.url is None:
        raise FileNotFoundError(
            _missing_message(
                name,
                path,
                "no download URL reproduces this file byte for byte (it was made for this project from "
                f"{info.source or 'the source in PROVENANCE.md'}); url=None",
            )
        )
    if not download or os.environ.get(OFFLINE_ENV_VAR, "") not in ("", "0"):
        raise FileNotFoundError(_missing_message(name, path, f"downloads disabled; source URL: {df.url}"))
    try:
        _download(df.url, path, df.sha256)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise FileNotFoundError(_missing_message(name, path, f"download from {df.url} failed: {err}")) from err
    return path


# ----------------------------------------------------------------------------- dataset container


@dataclass
class StructureDataset:
    """Structures with one scalar target each.

    Attributes:
        name: Dataset name.
        ids: Entry ids, length n (``int`` for Matbench/MatUQ files, ``str`` such as ``"mp-149"`` otherwise).
        structures: pymatgen Structures, length n.
        targets: Target values, shape (n,), float64, in ``units``.
        target_name: Record field the targets come from.
        units: Units of the target (``""`` = unitless).
        meta: File metadata plus ``path``, ``sha256``, ``n_dropped_nan`` and ``dropped_ids``.
    """

    name: str
    ids: list[int | str]
    structures: list[Structure]
    targets: np.ndarray
    target_name: str
    units: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.float64)
        n = len(self.ids)
        if len(self.structures) != n or self.targets.shape != (n,):
            raise ValueError(
                f"ids, structures and targets must have the same length n and targets shape (n,), got "
                f"{n}, {len(self.structures)} and {self.targets.shape}."
            )

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: Sequence[int]) -> StructureDataset:
        """New dataset with the entries at 0-based ``indices`` (e.g. ``split.train``), same order."""
        idx = [int(i) for i in indices]
        return StructureDataset(
            name=self.name,
            ids=[self.ids[i] for i in idx],
            structures=[self.structures[i] for i in idx],
            targets=self.targets[idx],
            target_name=self.target_name,
            units=self.units,
            meta=dict(self.meta),
        )

    def index_of(self, ids: Sequence[int | str]) -> list[int]:
        """0-based positions of ``ids`` (raises ``ValueError`` naming the ids not in this dataset)."""
        pos = {i: k for k, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise ValueError(f"{len(missing)} ids are not in dataset {self.name!r} (first: {missing[:5]}).")
        return [pos[i] for i in ids]


# ----------------------------------------------------------------------------- parsing


def _parse_chunk(payload: tuple[str, list[Any]]) -> tuple[list[Structure], dict[str, int]]:
    """Parse raw records (CIF strings or Structure dicts); returns structures and warning-message counts."""
    from pymatgen.core import Structure

    kind, items = payload
    counts: dict[str, int] = {}
    out = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for item in items:
            if kind == "cif":
                out.append(Structure.from_str(item, fmt="cif"))
            else:
                out.append(Structure.from_dict(item))
    for w in caught:
        msg = str(w.message)
        if "fractional coordinates rounded to ideal values" in msg:
            msg = "pymatgen CifParser rounded some fractional coordinates to ideal values"
        counts[msg] = counts.get(msg, 0) + 1
    return out, counts


def _parse_all(kind: str, raw: list[Any], *, n_jobs: int, progress: bool | None, desc: str) -> list[Structure]:
    from tqdm.auto import tqdm

    chunk = 250
    chunks = [(kind, raw[i : i + chunk]) for i in range(0, len(raw), chunk)]
    structures: list[Structure] = []
    counts: dict[str, int] = {}
    bar = tqdm(total=len(raw), desc=desc, unit="struct", disable=(not progress) if progress is not None else None)
    try:
        if n_jobs > 1 and len(chunks) > 1:
            import multiprocessing as mp

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(n_jobs) as pool:
                for res, cnt in pool.imap(_parse_chunk, chunks):
                    structures.extend(res)
                    for k, v in cnt.items():
                        counts[k] = counts.get(k, 0) + v
                    bar.update(len(res))
        else:
            for ch in chunks:
                res, cnt = _parse_chunk(ch)
                structures.extend(res)
                for k, v in cnt.items():
                    counts[k] = counts.get(k, 0) + v
                bar.update(len(res))
    finally:
        bar.close()
    for msg, k in counts.items():
        if msg.startswith("pymatgen CifParser rounded"):
            logger.info("%s: %s (%d structures; expected for P1 CIFs).", desc, msg, k)
        else:
            warnings.warn(f"{desc}: {k} structures raised the parser warning: {msg}", stacklevel=3)
    return structures


def _default_n_jobs(n_items: int) -> int:
    if n_items < 2000:
        return 1
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _read_json_gz(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _atomic_pickle(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _structures_for(
    records: list[dict],
    struct_key: str,
    positions: list[int],
    *,
    file_sha: str,
    cache_root: Path | None,
    parse_whole_file: bool,
    n_jobs: int | None,
    progress: bool | None,
    desc: str,
) -> list[Structure]:
    """Structures of ``records[positions]``, through a per-file pickle cache keyed by the file's sha256."""
    import pymatgen.core

    cache_file = None
    if cache_root is not None:
        tag = f"{file_sha}-{struct_key}-pmg{pymatgen.core.__version__}-v{_PARSE_CACHE_VERSION}"
        cache_file = cache_root / "structures" / f"{tag}.pkl"
        if cache_file.is_file():
            try:
                with open(cache_file, "rb") as fh:
                    cached = pickle.load(fh)
                if isinstance(cached, list) and len(cached) == len(records):
                    logger.info("%s: loaded %d parsed structures from %s", desc, len(cached), cache_file)
                    return [cached[i] for i in positions]
                logger.warning("Ignoring parsed-structure cache %s (unexpected content).", cache_file)
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
                logger.warning("Ignoring unreadable parsed-structure cache %s (%s).", cache_file, err)
    # Parse the whole file when caching (so that later loads with any limit/target hit the cache);
    # else parse just what is needed.
    whole = cache_file is not None and parse_whole_file
    todo = list(range(len(records))) if whole else positions
    raw = [records[i][struct_key] for i in todo]
    nj = _default_n_jobs(len(raw)) if n_jobs is None else int(n_jobs)
    if nj < 1:
        raise ValueError(f"n_jobs must be >= 1 or None, got {n_jobs}.")
    parsed = _parse_all(struct_key, raw, n_jobs=nj, progress=progress, desc=desc)
    if whole:
        try:
            _atomic_pickle(parsed, cache_file)
        except OSError as err:
            logger.warning("Could not write parsed-structure cache %s (%s).", cache_file, err)
        return [parsed[i] for i in positions]
    return parsed


def _as_float_target(value: Any, field_name: str, rec_id: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"target field {field_name!r} must hold numbers; entry {rec_id!r} has {type(value).__name__} "
            f"value {str(value)[:80]!r}. Pick a scalar numeric field."
        )
    return float(value)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    target: str | None = None,
    limit: int | None = None,
    verify: bool = True,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    n_jobs: int | None = None,
    progress: bool | None = None,
) -> StructureDataset:
    """Load a registered dataset as structures + scalar targets.

    Missing or ``null`` (NaN) targets are **dropped with a warning** that gives their count; their ids
    are in ``meta["dropped_ids"]``. Entries keep the file order; ``limit`` takes the first ``limit``
    entries that have a target.

    Parsing CIFs is slow (about 4 ms per structure), so parsed structures of the whole file are cached
    as a pickle under ``<cache root>/structures/<file sha256>-...pkl`` (cache root: ``cache_dir``,
    ``$MATGL_CAL_CACHE`` or ``~/.cache/matgl_cal``); large files are parsed with 2 processes.

    Args:
        name: Registered dataset name (see :func:`list_datasets`).
        data_dir: Data directory; default ``$MATGL_CAL_DATA``, else ``~/.cache/matgl_cal/data``.
        target: Record field used as target; default the registry's default target.
        limit: Keep only the first ``limit`` entries (>= 1).
        verify: Check the file's sha256 against the registry (mismatch raises ``ValueError``).
        cache_dir: Cache root for parsed structures (see above).
        use_cache: Read/write the parsed-structure cache.
        n_jobs: Parser processes; default 1 below 2000 structures, else min(2, CPUs).
        progress: Show a tqdm bar (None: only on a terminal).

    Returns:
        A :class:`StructureDataset`.

    Raises:
        ValueError: Unknown dataset, missing target field (lists the available ones), non-numeric
            target (shows an example), checksum mismatch, bad ``limit``.
        FileNotFoundError: File missing and not downloadable.
    """
    info: DatasetInfo = get_dataset_info(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}.")
    path = dataset_path(name, data_dir=data_dir)
    file_sha = sha256_file(path)
    if verify:
        _check_digest(str(path), file_sha, info.file.sha256)
    content = _read_json_gz(path)
    if info.layout == "records":
        if not isinstance(content, dict) or "data" not in content:
            raise ValueError(f"{path}: expected a JSON object with a 'data' list (layout='records').")
        records, file_meta = content["data"], dict(content.get("meta", {}))
    else:
        if not isinstance(content, list):
            raise ValueError(f"{path}: expected a JSON list of records (layout='list').")
        records, file_meta = content, {}
    if not records:
        raise ValueError(f"{path} holds no records.")
    target = info.target if target is None else target
    first = records[0]
    if target not in first:
        numeric = sorted(k for k, v in first.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ValueError(
            f"target field {target!r} not in dataset {name!r}; numeric fields: {numeric}; all fields: {sorted(first)}."
        )
    struct_key = "cif" if "cif" in first else "structure" if "structure" in first else None
    if struct_key is None:
        raise ValueError(f"{path}: records hold neither 'cif' nor 'structure' (fields: {sorted(first)}).")

    keep: list[int] = []
    values: list[float] = []
    dropped: list[Any] = []
    for i, rec in enumerate(records):
        rid = rec.get(info.id_field, i)
        if target not in rec:
            raise ValueError(f"entry {rid!r} of dataset {name!r} has no field {target!r} (fields: {sorted(rec)}).")
        v = _as_float_target(rec[target], target, rid)
        if math.isnan(v):
            dropped.append(rid)
            continue
        if limit is None or len(keep) < limit:
            keep.append(i)
            values.append(v)
    if dropped:
        warnings.warn(
            f"dataset {name!r}: dropped {len(dropped)} entries whose {target!r} is missing/NaN "
            f"(ids in meta['dropped_ids']; first: {dropped[:5]}).",
            stacklevel=2,
        )
    if not keep:
        raise ValueError(f"dataset {name!r} has no entry with a finite {target!r}.")
    ids = [records[i].get(info.id_field, i) for i in keep]
    cache_root = resolve_cache_dir(cache_dir) if use_cache else None
    structures = _structures_for(
        records,
        struct_key,
        keep,
        file_sha=file_sha,
        cache_root=cache_root,
        parse_whole_file=limit is None,
        n_jobs=n_jobs,
        progress=progress,
        desc=f"parse {name}",
    )
    meta = {
        **file_meta,
        "path": str(path),
        "sha256": file_sha,
        "source": info.source,
        "n_dropped_nan": len(dropped),
        "dropped_ids": dropped,
    }
    return StructureDataset(
        name=name,
        ids=ids,
        structures=structures,
        targets=np.asarray(values, dtype=np.float64),
        target_name=target,
        units=info.units_of(target),
        meta=meta,
    )

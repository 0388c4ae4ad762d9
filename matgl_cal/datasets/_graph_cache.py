"""Structure -> MatGL graph conversion with an on-disk cache keyed by the structures themselves."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from matgl_cal.datasets._loaders import StructureDataset, resolve_cache_dir

if TYPE_CHECKING:
    from pymatgen.core import Structure
    from torch_geometric.data import Data

__all__ = ["CachedGraphDataset", "graph_cache_key", "graphs_for", "structure_fingerprint"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_CONVERTER = "matgl.ext.pymatgen.Structure2Graph"


def structure_fingerprint(structure: Structure) -> str:
    """sha256 hex digest of a structure's lattice matrix, fractional coordinates and site species.

    Two structures share a fingerprint only if these are bit-identical (float64), so any change
    to the geometry or the chemistry gives a new graph-cache key.
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(structure.frac_coords, dtype=np.float64).tobytes())
    h.update("|".join(site.species_string for site in structure).encode())
    return h.hexdigest()


def graph_cache_key(
    ids: Sequence[Any], structures: Sequence[Structure], *, element_types: Sequence[str], cutoff: float
) -> str:
    """Cache key: sha256 of (ids, structure fingerprints, element_types, cutoff, converter class, matgl version)."""
    import matgl

    payload = {
        "format": _FORMAT_VERSION,
        "ids": [f"{type(i).__name__}:{i}" for i in ids],
        "fingerprints": [structure_fingerprint(s) for s in structures],
        "element_types": list(element_types),
        "cutoff": float(cutoff),
        "converter": _CONVERTER,
        "matgl": matgl.__version__,
    }
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def _pack(graphs: list[Data], lattices: list[torch.Tensor], state_attrs: list[Any]) -> dict[str, Any]:
    """Concatenate per-graph tensors into a few large tensors (fast to save/load, weights_only safe)."""
    first = graphs[0].to_dict()
    order = list(first)
    cat: dict[str, torch.Tensor] = {}
    cat_dim: dict[str, int] = {}
    sizes: dict[str, torch.Tensor] = {}
    for k in order:
        if k == "num_nodes":
            continue
        vals = [g[k] for g in graphs]
        if not all(isinstance(v, torch.Tensor) for v in vals):
            raise TypeError(f"graph attribute {k!r} is not a tensor in every graph; cannot cache it.")
        dim = graphs[0].__cat_dim__(k, vals[0])
        dim = 0 if dim is None else int(dim) % max(vals[0].dim(), 1)
        cat[k] = torch.cat(vals, dim=dim) if vals[0].dim() > 0 else torch.stack(vals)
        cat_dim[k] = dim if vals[0].dim() > 0 else -1
        sizes[k] = torch.tensor([v.shape[dim] if v.dim() > 0 else 1 for v in vals], dtype=torch.long)
    return {
        "order": order,
        "cat": cat,
        "cat_dim": cat_dim,
        "sizes": sizes,
        "num_nodes": torch.tensor([g.num_nodes for g in graphs], dtype=torch.long),
        "lattices": torch.stack([torch.as_tensor(lat) for lat in lattices]),
        "state_attr": torch.as_tensor(np.array(state_attrs)),
    }


class CachedGraphDataset(Dataset):
    """Graphs of a :class:`~matgl_cal.datasets.StructureDataset`, drop-in for ``matgl.graph.data.MGLDataset``.

    ``dataset[i]`` returns ``(graph, lattice, state_attr, {label_name: target})`` exactly as
    ``MGLDataset.__getitem__`` does: a PyG ``Data`` with ``edge_index``, ``num_nodes``,
    ``pbc_offset``, ``node_type``, ``frac_coords``; lattice shape (1, 3, 3) in Angstrom;
    ``state_attr`` shape (2,); the target as a 0-d ``matgl.float_th`` tensor in the dataset's units.
    ``labels`` is a ``{label_name: list of floats}`` dict like ``MGLDataset.labels``, so
    ``MGLDataLoader`` picks ``collate_fn_graph``. Subsets via ``torch.utils.data.Subset`` work with
    ``MGLDataLoader`` too. Each item holds fresh tensors (mutating them never touches the cache).

    Attributes:
        ids: Entry ids, length n.
        labels: ``{label_name: [float, ...]}``.
        lattices: Tensor (n, 1, 3, 3).
        state_attr: Tensor (n, 2).
        cache_key: The key the graphs were stored under.
        cache_path: File of the cache, or None if caching was off.
    """

    def __init__(
        self,
        packed: dict[str, Any],
        *,
        ids: Sequence[Any],
        labels: dict[str, list[float]],
        cache_key: str,
        cache_path: Path | None,
    ) -> None:
        self._order: list[str] = list(packed["order"])
        self._cat: dict[str, torch.Tensor] = packed["cat"]
        self._cat_dim: dict[str, int] = {k: int(v) for k, v in packed["cat_dim"].items()}
        self._num_nodes = packed["num_nodes"]
        n = int(self._num_nodes.shape[0])
        self._offsets = {
            k: torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(s, 0)]).tolist()
            for k, s in packed["sizes"].items()
        }
        self._num_nodes_list = self._num_nodes.tolist()
        self.lattices: torch.Tensor = packed["lattices"]
        self.state_attr: torch.Tensor = packed["state_attr"]
        self.ids = list(ids)
        self.labels = {k: list(v) for k, v in labels.items()}
        for k, v in self.labels.items():
            if len(v) != n:
                raise ValueError(f"label {k!r} has {len(v)} values for {n} graphs.")
        if len(self.ids) != n:
            raise ValueError(f"ids has {len(self.ids)} entries for {n} graphs.")
        self.cache_key = cache_key
        self.cache_path = cache_path

    def __len__(self) -> int:
        return len(self._num_nodes_list)

    def graph(self, idx: int) -> Data:
        """The graph of entry ``idx`` (a fresh ``torch_geometric.data.Data``)."""
        from torch_geometric.data import Data

        g = Data()
        for k in self._order:
            if k == "num_nodes":
                g.num_nodes = self._num_nodes_list[idx]
                continue
            dim = self._cat_dim[k]
            if dim < 0:
                g[k] = self._cat[k][idx].clone()
            else:
                a, b = self._offsets[k][idx], self._offsets[k][idx + 1]
                g[k] = self._cat[k].narrow(dim, a, b - a).clone()
        return g

    def __getitem__(self, idx: int) -> tuple:
        """``(graph, lattice (1, 3, 3), state_attr (2,), {label: 0-d tensor})``, as ``MGLDataset``."""
        import matgl

        if isinstance(idx, (bool, np.bool_)) or not isinstance(idx, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(idx).__name__}; use torch.utils.data.Subset for slices.")
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"Index {idx} out of range for dataset with {n} graphs")
        idx = int(idx) % n
        labels = {k: torch.tensor(v[idx], dtype=matgl.float_th) for k, v in self.labels.items()}
        return self.graph(idx), self.lattices[idx].clone(), self.state_attr[idx].clone(), labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, labels={list(self.labels)}, key={self.cache_key[:12]}...)"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _convert(
    dataset: StructureDataset, element_types: tuple[str, ...], cutoff: float, progress: bool | None
) -> dict[str, Any]:
    from matgl.ext.pymatgen import Structure2Graph
    from tqdm.auto import tqdm

    converter = Structure2Graph(element_types=element_types, cutoff=cutoff)
    graphs, lattices, states = [], [], []
    disable = None if progress is None else not progress
    bar = tqdm(dataset.structures, desc=f"graphs {dataset.name}", unit="struct", disable=disable)
    for i, s in enumerate(bar):
        try:
            g, lat, st = converter.get_graph(s)
        except KeyError as err:
            raise ValueError(
                f"structure {dataset.ids[i]!r} ({s.composition.reduced_formula}) contains element {err.args[0]!r}, "
                f"which is not in element_types ({len(element_types)} elements); pass the model's element_types."
            ) from None
        graphs.append(g.to("cpu"))
        lattices.append(lat.to("cpu"))
        states.append(st)
    return _pack(graphs, lattices, states)


def graphs_for(
    dataset: StructureDataset,
    *,
    element_types: Sequence[str],
    cutoff: float = 5.0,
    cache_dir: str | os.PathLike | None = None,
    label_name: str | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
) -> CachedGraphDataset:
    """Convert a dataset's structures with ``matgl.ext.pymatgen.Structure2Graph`` and cache the graphs on disk.

    The cache file is ``<cache root>/graphs/<name>-<key>.pt`` where the key is the sha256 of the ids,
    a fingerprint of every structure (lattice, fractional coordinates, species), ``element_types``,
    ``cutoff``, the converter class and the matgl version: a different structure list never reuses
    a stale cache (unlike ``MGLDataset``'s default cache). Writes are atomic (temp file + ``os.replace``).
    Targets are not part of the key: the same graphs serve every target of a dataset.

    In MatGL 4.x (PyG) the three-body (line) graph is built inside M3GNet from ``threebody_cutoff``,
    so it is a model setting, not a graph-conversion one, and is not an argument here.

    Args:
        dataset: Structures, ids and targets.
        element_types: Element symbols in the model's order (``model.element_types`` when fine-tuning;
            ``matgl.config.DEFAULT_ELEMENTS`` for the pretrained potentials).
        cutoff: Graph cutoff radius in Angstrom (> 0), the model's ``cutoff``.
        cache_dir: Cache root (argument, else ``$MATGL_CAL_CACHE``, else ``~/.cache/matgl_cal``).
        label_name: Key of the target in the labels dict; default ``dataset.target_name``.
        use_cache: Read and write the on-disk cache.
        progress: Show a tqdm bar while converting (None: only on a terminal).

    Returns:
        A :class:`CachedGraphDataset` for ``MGLDataLoader(..., collate_fn=collate_fn_graph)``.

    Raises:
        TypeError: ``dataset`` is not a StructureDataset.
        ValueError: Empty dataset, bad ``element_types``/``cutoff``, or an element not in ``element_types``.
    """
    if not isinstance(dataset, StructureDataset):
        raise TypeError(f"dataset must be a StructureDataset, got {type(dataset).__name__}.")
    if len(dataset) == 0:
        raise ValueError("dataset is empty.")
    if isinstance(element_types, str) or not all(isinstance(e, str) for e in element_types) or not element_types:
        raise ValueError(f"element_types must be a non-empty sequence of element symbols, got {element_types!r}.")
    element_types = tuple(element_types)
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not cutoff > 0:
        raise ValueError(f"cutoff must be a positive number (Angstrom), got {cutoff!r}.")
    label = dataset.target_name if label_name is None else label_name
    labels = {label: dataset.targets.tolist()}
    key = graph_cache_key(dataset.ids, dataset.structures, element_types=element_types, cutoff=cutoff)
    path = resolve_cache_dir(cache_dir) / "graphs" / f"{dataset.name}-{key}.pt" if use_cache else None
    if path is not None and path.is_file():
        try:
            stored = torch.load(path, weights_only=True)
            if stored.get("key") == key and stored.get("format") == _FORMAT_VERSION:
                logger.info("Loaded %d cached graphs from %s", len(dataset), path)
                return CachedGraphDataset(
                    stored["packed"], ids=dataset.ids, labels=labels, cache_key=key, cache_path=path
                )
            logger.warning("Graph cache %s does not match its key; rebuilding.", path)
        except (OSError, RuntimeError, KeyError, AttributeError, EOFError) as err:
            logger.warning("Unreadable graph cache %s (%s); rebuilding.", path, err)
    packed = _convert(dataset, element_types, float(cutoff), progress)
    if path is not None:
        meta = {
            "dataset": dataset.name,
            "n": len(dataset),
            "element_types": list(element_types),
            "cutoff": float(cutoff),
        }
        try:
            _atomic_torch_save({"format": _FORMAT_VERSION, "key": key, "meta": meta, "packed": packed}, path)
        except OSError as err:
            logger.warning("Could not write graph cache %s (%s).", path, err)
    return CachedGraphDataset(packed, ids=dataset.ids, labels=labels, cache_key=key, cache_path=path)

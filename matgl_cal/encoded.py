"""The frozen-encoder fast path: run a frozen pretrained encoder once per structure, then train only its head.

A property model built by :func:`matgl_cal.models.property_model_from` with ``freeze_encoder=True`` maps a
structure to the per-atom features of a pretrained potential's encoder, pools them (``readout``) and applies a
new MLP (``final_layer``). Only the head trains, so the per-atom features of a structure are the same in every
epoch. :func:`encode_graphs` computes them once; :class:`FrozenEncoderHead` is a module that MatGL's
``ModelLightningModule`` trains exactly like the full model, but on the stored features:

* ``FrozenEncoderHead(model)(g)`` equals ``model(g)`` for an encoded graph ``g`` (same pooling and MLP
  modules, shared with ``model``, so training the head trains ``model``);
* an epoch costs the pooling and the MLP instead of the whole encoder (about 12x faster for the universal
  potential ``M3GNet-PES-MatPES-PBE-2025.2`` on 400 dielectric structures on one CPU core);
* CAL's readout space, its costs and hardness scores work unchanged (``final_layer`` is the hooked module);
  spaces that change the structure or the encoder's features (``positions``, ``strain``, ``embedding``) cannot,
  and say so.

Example:
    >>> import torch
    >>> from matgl.models import M3GNet
    >>> from matgl_cal.models import property_model_from
    >>> from matgl_cal.encoded import FrozenEncoderHead
    >>> _ = torch.manual_seed(0)
    >>> pes = M3GNet(element_types=("Li", "O"), is_intensive=False, units=8, nblocks=1,
    ...              dim_node_embedding=8, dim_edge_embedding=8)
    >>> head = FrozenEncoderHead(property_model_from(pes))
    >>> sorted(n.split(".")[0] for n, _ in head.named_parameters())[:1]
    ['final_layer']
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from matgl_cal.models import HEAD_PREFIXES

__all__ = [
    "ENCODED_FEATURES",
    "EncodedGraphDataset",
    "FrozenEncoderHead",
    "encodable",
    "encode_graphs",
    "encoder_fingerprint",
    "predict_encoded",
]

#: Name of the per-atom feature attribute that :func:`encode_graphs` stores on each graph.
ENCODED_FEATURES = "encoder_features"


def _structure_problem(model: Any) -> tuple[type[Exception], str] | None:
    """Why ``model`` cannot have its head trained on stored features (exception class, message), or None."""
    cls = type(model).__name__
    if cls not in ("M3GNet", "TensorNet") or not isinstance(model, nn.Module):
        return TypeError, (
            f"must be an intensive M3GNet or TensorNet property model (e.g. from "
            f"matgl_cal.models.property_model_from); got {cls}."
        )
    if not getattr(model, "is_intensive", False) or getattr(model, "task_type", "regression") != "regression":
        return ValueError, f"must be an intensive regression model (is_intensive=True); got a {cls} that is not."
    if getattr(model, "include_state", False):
        return ValueError, "must not use state features (include_state=True): its head would read them."
    if getattr(model, "field", "node_feat") != "node_feat":
        return ValueError, f"must pool node features (field='node_feat'); got field={model.field!r}."
    return None


def encodable(model: Any) -> bool:
    """Whether ``model``'s head (``readout`` + ``final_layer``) reads only per-atom encoder features, so that
    :func:`encode_graphs` and :class:`FrozenEncoderHead` apply once its encoder is frozen."""
    return _structure_problem(model) is None


def _check_frozen_property_model(model: Any, name: str = "model", *, frozen: bool = True) -> None:
    """Raise unless ``model`` is an intensive M3GNet/TensorNet regression model (whose encoder does not train)."""
    problem = _structure_problem(model)
    if problem is not None:
        raise problem[0](f"`{name}` {problem[1]}")
    training = sorted({n.split(".")[0] for n, p in model.named_parameters()
                       if p.requires_grad and not n.startswith(HEAD_PREFIXES)})
    if frozen and training:
        raise ValueError(
            f"`{name}` must have a frozen encoder (only {list(HEAD_PREFIXES)} may train); parameters of {training} "
            "require gradients. Build it with property_model_from(..., freeze_encoder=True)."
        )


class FrozenEncoderHead(nn.Module):
    """The head of an intensive model with a frozen encoder, applied to features from :func:`encode_graphs`.

    It shares ``readout`` (the pooling) and ``final_layer`` (the MLP) with ``model``: training this module
    trains ``model``'s head, and ``model`` itself stays a complete MatGL model to save and load. Pass it to
    ``ModelLightningModule(model=FrozenEncoderHead(model), ...)`` with loaders over an
    :class:`EncodedGraphDataset`.

    Args:
        model: An intensive M3GNet or TensorNet whose parameters outside ``readout``/``final_layer`` do not
            require gradients (``property_model_from(..., freeze_encoder=True)``).
        check_frozen: Check that. Off only for inference (:func:`predict_encoded`).

    Attributes:
        model: The full model (not a registered submodule, so this module's ``state_dict`` is the head only).
        element_types, cutoff: Copied from ``model``.

    Raises:
        TypeError: ``model`` is not an M3GNet/TensorNet.
        ValueError: It is not an intensive regression model on node features, or its encoder trains.
    """

    #: The forward pass reads stored features, not the structure: physical and encoder spaces cannot hook it.
    reads_structure: ClassVar[bool] = False
    is_intensive: ClassVar[bool] = True
    task_type: ClassVar[str] = "regression"
    dropout: ClassVar[None] = None

    def __init__(self, model: nn.Module, *, check_frozen: bool = True) -> None:
        super().__init__()
        _check_frozen_property_model(model, frozen=check_frozen)
        self.readout = model.readout
        self.final_layer = model.final_layer
        self.__dict__["model"] = model  # kept out of the module tree on purpose
        self.element_types = tuple(model.element_types)
        self.cutoff = float(model.cutoff)
        self.feature_dict: dict[str, Any] = {}

    def forward(self, g: Any, state_attr: torch.Tensor | None = None, l_g: Any = None) -> torch.Tensor:
        """Prediction per graph from the stored per-atom features, as ``model(g)`` returns it (squeezed).

        Args:
            g: An encoded graph or batch (attribute ``encoder_features``, ``(n_atoms, dim)``).
            state_attr: Ignored (the model has no state features).
            l_g: Ignored (no line graph is needed).
        """
        x = getattr(g, ENCODED_FEATURES, None)
        if x is None:
            raise ValueError(
                f"FrozenEncoderHead needs graphs with `{ENCODED_FEATURES}` (from matgl_cal.encoded.encode_graphs); "
                "got a graph without them."
            )
        vec = self.readout(x, getattr(g, "batch", None))
        out = self.final_layer(vec)
        self.feature_dict = {"readout": vec, "final": out}
        return torch.squeeze(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, element_types={len(self.element_types)})"


def encoder_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's class and every encoder tensor (everything outside the head), for cache keys."""
    h = hashlib.sha256(type(model).__name__.encode())
    for key, value in sorted(model.state_dict().items()):
        if key.startswith(HEAD_PREFIXES):
            continue
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class EncodedGraphDataset(Dataset):
    """Per-atom encoder features of a set of structures, served as MatGL dataset items.

    ``dataset[i]`` is ``(graph, lattice, state_attr, labels)`` like ``MGLDataset``'s items, so MatGL's
    ``collate_fn_graph`` and ``ModelLightningModule`` take it; the graph holds ``encoder_features``
    ``(n_atoms, dim)``, ``node_type`` and ``frac_coords`` and has no edges (the head needs none).

    Attributes:
        features: All per-atom features, ``(total atoms, dim)``, float32.
        num_nodes: Atoms per structure, ``(n,)``.
        labels: ``{label name: [value, ...]}``, as ``MGLDataset.labels``.
        fingerprint: :func:`encoder_fingerprint` of the encoder that made the features.
    """

    def __init__(
        self,
        features: torch.Tensor,
        num_nodes: torch.Tensor,
        node_type: torch.Tensor,
        frac_coords: torch.Tensor,
        lattices: torch.Tensor,
        state_attr: torch.Tensor,
        labels: dict[str, list[Any]],
        fingerprint: str,
    ) -> None:
        n = int(num_nodes.shape[0])
        total = int(num_nodes.sum())
        for name, t in (("features", features), ("node_type", node_type), ("frac_coords", frac_coords)):
            if int(t.shape[0]) != total:
                raise ValueError(f"`{name}` has {int(t.shape[0])} rows for {total} atoms.")
        for name, t in (("lattices", lattices), ("state_attr", state_attr)):
            if int(t.shape[0]) != n:
                raise ValueError(f"`{name}` has {int(t.shape[0])} entries for {n} structures.")
        for k, v in labels.items():
            if len(v) != n:
                raise ValueError(f"label {k!r} has {len(v)} values for {n} structures.")
        self.features = features
        self.num_nodes = num_nodes
        self.node_type = node_type
        self.frac_coords = frac_coords
        self.lattices = lattices
        self.state_attr = state_attr
        self.labels = {k: list(v) for k, v in labels.items()}
        self.fingerprint = fingerprint
        self._offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(num_nodes, 0)]).tolist()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the dataset (tensors, labels, fingerprint), for ``torch.save``."""
        return {
            "format": 1,
            "features": self.features,
            "num_nodes": self.num_nodes,
            "node_type": self.node_type,
            "frac_coords": self.frac_coords,
            "lattices": self.lattices,
            "state_attr": self.state_attr,
            "labels": self.labels,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> EncodedGraphDataset:
        """Rebuild a dataset saved with :meth:`state_dict`.

        Raises:
            ValueError: ``state`` is not such a dict (or of another format version).
        """
        if not isinstance(state, dict) or state.get("format") != 1:
            raise ValueError("`state` must be a dict from EncodedGraphDataset.state_dict() (format 1).")
        return cls(**{k: v for k, v in state.items() if k != "format"})

    def __len__(self) -> int:
        return int(self.num_nodes.shape[0])

    def graph(self, idx: int) -> Any:
        """The encoded graph of structure ``idx`` (a fresh ``torch_geometric.data.Data``)."""
        from torch_geometric.data import Data

        a, b = self._offsets[idx], self._offsets[idx + 1]
        return Data(
            num_nodes=b - a,
            node_type=self.node_type[a:b].clone(),
            frac_coords=self.frac_coords[a:b].clone(),
            edge_index=torch.zeros(2, 0, dtype=torch.long),
            pbc_offset=torch.zeros(0, 3, dtype=self.frac_coords.dtype),
            **{ENCODED_FEATURES: self.features[a:b].clone()},
        )

    def __getitem__(self, idx: int) -> tuple:
        """``(graph, lattice (1, 3, 3), state_attr, {label: value})``."""
        if isinstance(idx, bool) or not hasattr(idx, "__index__"):
            raise TypeError(f"index must be an int, got {type(idx).__name__}; use torch.utils.data.Subset for slices.")
        n = len(self)
        idx = idx.__index__()
        if not -n <= idx < n:
            raise IndexError(f"Index {idx} out of range for dataset with {n} structures")
        idx %= n
        labels = {k: (v[idx].clone() if isinstance(v[idx], torch.Tensor) else v[idx]) for k, v in self.labels.items()}
        return self.graph(idx), self.lattices[idx].clone(), self.state_attr[idx].clone(), labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, dim={int(self.features.shape[-1])}, labels={list(self.labels)})"


def _items(dataset: Any) -> Sequence[Any]:
    return [dataset[i] for i in range(len(dataset))]


def encode_graphs(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> EncodedGraphDataset:
    """Run a frozen encoder once over a MatGL dataset and keep the per-atom features its head pools.

    The features are what ``model.readout`` receives in a forward pass with ``model`` in eval mode and
    without autograd, computed in batches of ``batch_size`` structures and split back per structure.

    Args:
        model: An intensive M3GNet/TensorNet with a frozen encoder (see :class:`FrozenEncoderHead`). Its
            train/eval mode is restored afterwards.
        dataset: Items ``(graph, lattice, state_attr, labels)``: an ``MGLDataset``, a
            :class:`~matgl_cal.datasets.CachedGraphDataset`, a ``Subset`` of one, or a list of items.
        batch_size: Structures per encoder pass (>= 1; only speed and memory depend on it).
        device: Where to run the encoder; default: the model's device. Features are stored on the CPU.

    Returns:
        An :class:`EncodedGraphDataset` with the items' labels, in the dataset's order.

    Raises:
        TypeError, ValueError: ``model`` is not a frozen-encoder property model (see
            :class:`FrozenEncoderHead`), ``batch_size`` is not an int >= 1, or ``dataset`` is empty.
    """
    from matgl.graph.data import collate_fn_graph
    from matgl.utils.training import ModelLightningModule

    _check_frozen_property_model(model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}.")
    items = _items(dataset)
    if not items:
        raise ValueError("`dataset` must hold at least one structure; got an empty dataset.")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    runner = ModelLightningModule(model=model, data_mean=0.0, data_std=1.0)  # its forward builds pos from frac_coords
    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple) -> None:
        captured.append(args[0].detach().float().cpu())

    was_training = model.training
    original_device = next(model.parameters()).device
    model.to(dev).eval()
    handle = model.readout.register_forward_pre_hook(grab)
    feats, num_nodes, node_type, frac, lats, states = [], [], [], [], [], []
    labels: dict[str, list[Any]] = {k: [] for k in items[0][3]}
    try:
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                g, lat, state_attr, _ = collate_fn_graph([(it[0], it[1], it[2], {"y": 0.0}) for it in chunk])
                runner(g=g.to(dev), lat=lat.to(dev), state_attr=state_attr.to(dev))
                feats.append(captured.pop())
                for graph, lattice, state, lab in chunk:
                    num_nodes.append(int(graph.num_nodes))
                    node_type.append(graph.node_type.cpu())
                    frac.append(graph.frac_coords.cpu())
                    lats.append(torch.as_tensor(lattice).cpu())
                    states.append(torch.as_tensor(state).cpu())
                    for k in labels:
                        value = lab[k]
                        labels[k].append(
                            float(value) if isinstance(value, torch.Tensor) and value.dim() == 0 else value)
    finally:
        handle.remove()
        model.to(original_device).train(was_training)
    return EncodedGraphDataset(
        features=torch.cat(feats),
        num_nodes=torch.tensor(num_nodes, dtype=torch.long),
        node_type=torch.cat(node_type),
        frac_coords=torch.cat(frac),
        lattices=torch.stack(lats),
        state_attr=torch.stack(states),
        labels=labels,
        fingerprint=encoder_fingerprint(model),
    )


def predict_encoded(model: nn.Module, encoded: EncodedGraphDataset, *, batch_size: int = 64) -> torch.Tensor:
    """Predictions of ``model`` for every structure of ``encoded``, running its head only.

    Exact only when ``model``'s encoder is the one that made the features; that is checked (WiSE-FT mixes and
    fine-tuned copies of a frozen encoder pass), so ``model`` need not have ``requires_grad`` off.

    Args:
        model: An intensive M3GNet/TensorNet property model.
        encoded: Features from :func:`encode_graphs`.
        batch_size: Structures per head pass.

    Returns:
        ``(len(encoded),)`` float64 predictions, in the model's output units, on the CPU.

    Raises:
        ValueError: ``model``'s encoder weights differ from those that made ``encoded``.
    """
    from matgl.graph.data import collate_fn_graph
    from torch.utils.data import DataLoader

    if encoder_fingerprint(model) != encoded.fingerprint:
        raise ValueError(
            "`model`'s encoder weights differ from those that made `encoded`: its features would be wrong; encode "
            "the structures with this model (encode_graphs) or run the full model."
        )
    head = FrozenEncoderHead(model, check_frozen=False)
    was_training = model.training
    # the head's device: while a Lightning module trains it on a GPU, the encoder part of `model` stays on the CPU
    device = next(head.parameters()).device
    model.eval()
    preds = []
    try:
        with torch.no_grad():
            for g, _lat, _state, _labels in DataLoader(encoded, batch_size=batch_size, collate_fn=collate_fn_graph):
                preds.append(head(g.to(device)).reshape(-1).double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(preds)

"""Cost of the CAL hook: CAL/ERM epoch time, adversarial-step time vs its floor, cost-update memory.

Trains the same small M3GNet property model (matbench_dielectric, refractive index) and a small
M3GNet potential (EMT-labelled alloy cells: energies, forces, stresses) with ERM and with CAL in one
process and prints:

* ``epoch_ratio``: mean CAL epoch time (after warm-up) / mean ERM epoch time;
* ``adv_step_vs_floor``: measured time of one adversarial step / ((K + T + 1) x one plain
  forward+backward on the same batch), i.e. how much the implementation wastes over the floor;
* ``cost_update_peak_ratio``: peak memory (the callback's default ``adversarial_loss``, energy term for
  potentials) of the model step that carries the cost update (forward, ``v = dR/dtheta_s``, ``dL/dtheta_s``
  with graph, the Hessian-vector product, backward) / peak memory of a plain ERM forward+backward on the
  same batch. Measured with CUDA's allocator on a GPU, with the torch profiler's CPU allocation events on
  a CPU.

Run: ``python benchmarks/bench_hook.py [--device cpu|cuda] [--json out.json]`` (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from matgl.ext.pymatgen import Structure2Graph
from matgl.graph.data import MGLDataLoader, MGLDataset
from matgl.models import M3GNet
from matgl.utils.training import ModelLightningModule, PotentialLightningModule
from pymatgen.io.ase import AseAtomsAdaptor

from matgl_cal import AdversarialAugmentation
from matgl_cal._tasks import make_task
from matgl_cal.costs import cost_gradient_direction, stratified_risk
from matgl_cal.datasets import graphs_for, load_dataset

#: CAL settings measured here (the callback's defaults except warm-up, shortened to fit the run).
CAL_SETTINGS = {"attack_steps": 3, "model_steps": 1, "adversarial_batches": 3, "warmup_epochs": 1, "rerank_every": 4}


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module):  # noqa: D102
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):  # noqa: D102
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._t0)

    @staticmethod
    def _sync(pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(fn, device: torch.device) -> int:
    """Peak bytes allocated while ``fn`` runs (above what was allocated before)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if getattr(e, "cpu_memory_usage", 0)), key=lambda e: e.time_range.start
    )
    current = peak = 0
    for e in events:
        current += e.cpu_memory_usage
        peak = max(peak, current)
    return peak


def property_data(data_dir: str | None, n: int):
    ds = load_dataset("matbench_dielectric", data_dir=data_dir)
    keep = [i for i, s in enumerate(ds.structures) if len(s) <= 16][:n]
    small = ds.subset(keep) if hasattr(ds, "subset") else ds
    element_types = tuple(sorted({el.symbol for s in small.structures for el in s.composition}))
    graphs = graphs_for(small, element_types=element_types, cutoff=5.0)
    return graphs, element_types, float(np.mean(small.targets)), float(np.std(small.targets))


def potential_data(n: int):
    rng = np.random.default_rng(0)
    metals = ("Cu", "Ni", "Al", "Ag", "Au", "Pd", "Pt")
    structures, labels = [], {"energies": [], "forces": [], "stresses": []}
    for i in range(n):
        atoms = bulk(metals[i % 7], "fcc", a=4.0, cubic=True).repeat((1, 1, 2))
        for k in range(len(atoms)):
            atoms[k].symbol = metals[int(rng.integers(7))]
        atoms.set_cell(atoms.cell * (0.97 + 0.06 * rng.random()), scale_atoms=True)
        atoms.rattle(0.08, seed=i)
        atoms.calc = EMT()
        labels["energies"].append(float(atoms.get_potential_energy()))
        labels["forces"].append(atoms.get_forces().tolist())
        labels["stresses"].append((atoms.get_stress(voigt=False) * 160.21766208).tolist())
        structures.append(AseAtomsAdaptor.get_structure(atoms))
    with tempfile.TemporaryDirectory() as root:
        conv = Structure2Graph(element_types=metals, cutoff=5.0)
        ds = MGLDataset(structures=structures, converter=conv, labels=labels, save_cache=False, root=root)
    return ds, metals


def small_m3gnet(element_types, intensive: bool) -> M3GNet:
    return M3GNet(
        element_types=element_types, is_intensive=intensive, units=32, dim_node_embedding=32, dim_edge_embedding=32,
        nblocks=2, max_n=3, max_l=3, cutoff=5.0, threebody_cutoff=4.0,
    )


def run_case(name: str, make_module, train_loader, epochs: int, device: str, potential: bool) -> dict:
    results: dict = {"case": name}
    timers = {}
    for arm in ("erm", "cal"):
        L.seed_everything(0, verbose=False)
        module = make_module()
        timer = EpochTimer()
        callbacks = [timer]
        cal = None
        if arm == "cal":
            cal = AdversarialAugmentation(**CAL_SETTINGS)
            callbacks.append(cal)
            step_times: list[float] = []
            original = cal._adversarial_step

            def timed(*args, _orig=original, _times=step_times, **kwargs):
                _sync(module.device)
                t0 = time.perf_counter()
                _orig(*args, **kwargs)
                _sync(module.device)
                _times.append(time.perf_counter() - t0)

            cal._adversarial_step = timed
        trainer = L.Trainer(
            max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator=device, devices=1,
            inference_mode=not potential, num_sanity_val_steps=0, limit_val_batches=0,
        )
        trainer.fit(module, train_loader)
        timers[arm] = timer.times
        if cal is not None:
            results["adv_step_s"] = statistics.median(step_times)
            floor_module, floor_cal = module, cal
    warm = CAL_SETTINGS["warmup_epochs"]
    erm_epoch = statistics.mean(timers["erm"][warm:])
    cal_epoch = statistics.mean(timers["cal"][warm:])
    results.update(erm_epoch_s=erm_epoch, cal_epoch_s=cal_epoch, epoch_ratio=cal_epoch / erm_epoch)

    # Floor: one plain forward+backward on an adversarial-size batch, same module, same device.
    # Lightning's teardown moved the module back to the CPU after fit: put it on the training device again.
    floor_module.to(torch.device(device))
    task = make_task(floor_module)
    floor_cal._task = task
    batch = next(iter(train_loader))
    batch = floor_module.transfer_batch_to_device(batch, floor_module.device, 0)
    parts = task.split(batch)

    def fwd_bwd():
        floor_module.zero_grad(set_to_none=True)
        task.per_sample_loss(parts).mean().backward()

    for _ in range(2):
        fwd_bwd()
    reps = []
    for _ in range(7):
        _sync(floor_module.device)
        t0 = time.perf_counter()
        fwd_bwd()
        _sync(floor_module.device)
        reps.append(time.perf_counter() - t0)
    plain = statistics.median(reps)
    k, t = CAL_SETTINGS["attack_steps"], CAL_SETTINGS["model_steps"]
    results.update(fwd_bwd_s=plain, adv_step_vs_floor=results["adv_step_s"] / ((k + t + 1) * plain))

    # Memory: the model step that carries the cost update vs a plain ERM step.
    delta = floor_cal._attack(parts)
    u_adv, scale = delta.u.detach(), delta.scale
    params = floor_cal._theta_s()
    env = torch.zeros(parts.num_graphs, dtype=torch.long, device=floor_module.device)
    env[::2] = 1

    def cost_step(energy_only: bool):
        from matgl_cal.callback import _Delta

        floor_module.zero_grad(set_to_none=True)
        d = _Delta(lambda x: scale, u_adv.clone().requires_grad_(True))
        with floor_cal.space.inject(task.model, parts.g, parts.lat, d) as (g, lat):
            if energy_only:
                losses, cost_losses = task.per_sample_loss_terms(parts, g, lat)
            else:
                losses = cost_losses = task.per_sample_loss(parts, g, lat)
        cost_gradient_direction(stratified_risk(cost_losses, env, 0.5), cost_losses.mean(), params, d.u)
        losses.mean().backward()

    dev = floor_module.device
    erm_peak = peak_memory(fwd_bwd, dev)
    cost_peak = peak_memory(lambda: cost_step(floor_cal._cost_on_energy()), dev)
    results.update(erm_step_peak_mb=erm_peak / 2**20, cost_update_peak_mb=cost_peak / 2**20,
                   cost_update_peak_ratio=cost_peak / erm_peak)
    if potential:
        total_peak = peak_memory(lambda: cost_step(False), dev)
        results["cost_update_total_loss_peak_ratio"] = total_peak / erm_peak
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n-property", type=int, default=256, help="matbench_dielectric structures (<= 16 atoms)")
    parser.add_argument("--n-potential", type=int, default=64, help="EMT-labelled 8-atom alloy cells")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", default=os.environ.get("MATGL_CAL_DATA"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    graphs, elements, mean, std = property_data(args.data_dir, args.n_property)
    prop_loader, _ = MGLDataLoader(train_data=graphs, val_data=graphs, batch_size=args.batch_size, num_workers=0)
    pot_ds, metals = potential_data(args.n_potential)
    pot_loader, _ = MGLDataLoader(train_data=pot_ds, val_data=pot_ds, batch_size=8, num_workers=0)

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else (platform.processor() or "cpu")
    rows = [
        run_case(
            "M3GNet property (32 units, 2 blocks), matbench_dielectric",
            lambda: ModelLightningModule(model=small_m3gnet(elements, True), data_mean=mean, data_std=std,
                                         loss="l1_loss", lr=2e-3),
            prop_loader, args.epochs, args.device, potential=False,
        ),
        run_case(
            "M3GNet potential (32 units, 2 blocks), EMT alloys, E+F+S",
            lambda: PotentialLightningModule(model=small_m3gnet(metals, False), stress_weight=0.1, lr=2e-3),
            pot_loader, args.epochs, args.device, potential=True,
        ),
    ]
    print(f"device: {args.device} ({device_name}); torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"CAL settings: {CAL_SETTINGS}")
    header = ("case", "ERM epoch s", "CAL epoch s", "CAL/ERM epoch", "adv step s", "fwd+bwd s",
              "adv/(K+T+1) floor", "ERM step MB", "cost update MB", "cost/ERM memory")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {r['case']} | {r['erm_epoch_s']:.2f} | {r['cal_epoch_s']:.2f} | {r['epoch_ratio']:.2f} | "
            f"{r['adv_step_s']:.3f} | {r['fwd_bwd_s']:.3f} | {r['adv_step_vs_floor']:.2f} | "
            f"{r['erm_step_peak_mb']:.1f} | {r['cost_update_peak_mb']:.1f} | {r['cost_update_peak_ratio']:.2f} |"
        )
    for r in rows:
        if "cost_update_total_loss_peak_ratio" in r:
            print(f"potential, adversarial_loss='total' (force+stress terms in the cost update): cost/ERM memory "
                  f"{r['cost_update_total_loss_peak_ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "settings": CAL_SETTINGS, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

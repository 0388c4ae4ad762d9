"""Which probe structures make the force-drift bound hold on structures it never saw? (WBM fine-tuning.)

``finetune_adversarial(..., max_force_drift=0.02)`` without ``distill`` or ``source`` checks the drift on
copies of the target structures rattled by ``matgl_cal.finetune.PROBE_RATTLE``. This script measures how
well such probes predict the drift on the benchmark's held-out retention set (30 MP binaries rattled by
0.05 A, the set of ``bench_finetune.py``), along the whole WiSE-FT path.

For each (n_target, seed) of ``bench_finetune.py`` it fine-tunes with the library defaults but without
WiSE-FT (``wise_ft=False``: the same training as the default call, which mixes afterwards), then evaluates
the mixes ``theta_0 + a (theta - theta_0)``, ``a`` in {0, 0.1, ..., 1}, and records the force MAE
against the pretrained model's forces on each candidate probe and on the retention set:

  rattle05 / rattle10 / rattle20: the target structures rattled by 0.05 / 0.1 / 0.2 A;
  strain3_rattle10: the target structures under a random symmetric strain of up to 3 %, rattled by 0.1 A.

The summary replays the bound: WiSE-FT admits coefficients up to the last one before the probe's drift
exceeds the bound and picks the best admitted one on the validation part. The recorded pick of the default
call made with the 0.05 A probe (``--picks``: the ``*+defaults-probe0.05`` records) is kept when admitted, else the
largest admitted coefficient is taken (drift grows with ``a``, so the retention drift shown is an upper
bound of what the default call with that probe gives).

Run: ``python benchmarks/bench_drift_probe.py --method cal --json benchmarks/results/finetune_wbm/drift_probe_cal.json
--picks benchmarks/results/finetune_wbm/results.json``
(about 25 min per method on one CPU core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from bench_finetune import MODEL, load_mp_binaries, load_wbm
from matgl_cal import evaluate, finetune_adversarial, load_pretrained, rattled
from matgl_cal.finetune import _mixed_state, _pretrained_labels
from matgl_cal.models import clone_model

ALPHAS = [round(a, 1) for a in np.linspace(0.0, 1.0, 11)]


def strained(structures: list[Structure], max_strain: float, seed: int) -> list[Structure]:
    """Copies under a random symmetric strain with components uniform in [-max_strain, max_strain]."""
    rng = np.random.default_rng(seed + 1000)
    out = []
    for s in structures:
        e = rng.uniform(-max_strain, max_strain, size=(3, 3))
        c = s.copy()
        c.lattice = Lattice(s.lattice.matrix @ (np.eye(3) + (e + e.T) / 2))  # fractional coordinates kept
        out.append(c)
    return out


def probes_of(structures: list[Structure], seed: int) -> dict[str, list[Structure]]:
    return {
        "rattle05": rattled(structures, amplitude=0.05, seed=seed),
        "rattle10": rattled(structures, amplitude=0.10, seed=seed),
        "rattle20": rattled(structures, amplitude=0.20, seed=seed),
        "strain3_rattle10": rattled(strained(structures, 0.03, seed), amplitude=0.10, seed=seed),
    }


def curves(args: argparse.Namespace) -> list[dict]:
    wbm = load_wbm(args.data_dir, 24)
    pool = np.random.default_rng(0).permutation(len(wbm))[200:]  # the 200 test structures of bench_finetune
    pretrained = load_pretrained(MODEL, models_dir=args.models_dir)
    retention = _pretrained_labels(pretrained, rattled(load_mp_binaries(args.data_dir, 90)[:30], seed=1))
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    done = {(r["n"], r["seed"]) for r in rows}
    for n in args.n_target:
        for seed in args.seeds:
            if (n, seed) in done:
                continue
            target = wbm.subset(np.random.default_rng(seed).permutation(pool)[:n])
            t0 = time.perf_counter()
            tuned = finetune_adversarial(
                pretrained, target, adversarial=args.method == "cal", epochs=20, batch_size=8, lr=3e-4,
                energy_offset="ridge", val_fraction=0.25, early_stopping_patience=5, seed=seed, progress=False,
                wise_ft=False, max_force_drift=None,
            ).model
            sets = {k: _pretrained_labels(pretrained, v) for k, v in probes_of(target.structures, seed).items()}
            sets["heldout_mp"] = retention
            base = {k: v.detach().clone() for k, v in pretrained.state_dict().items()}
            final = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
            work = clone_model(tuned)
            drift: dict[str, list[float]] = {k: [] for k in sets}
            for a in ALPHAS:
                work.load_state_dict(_mixed_state(base, final, a))
                work.eval()
                for k, d in sets.items():
                    drift[k].append(evaluate(work, d)["force_mae"])
            rows.append({"n": n, "seed": seed, "alphas": ALPHAS, "curves": drift,
                         "seconds": time.perf_counter() - t0})
            args.json.write_text(json.dumps(rows, indent=1))
            print(n, seed, {k: [round(x, 4) for x in v] for k, v in drift.items()}, flush=True)
    return rows


def summary(rows: list[dict], picks: dict[tuple[int, int], float], bound: float) -> str:
    """Markdown table: per probe, the retention drift at the coefficient the bound lets WiSE-FT take."""
    probes = [k for k in rows[0]["curves"] if k != "heldout_mp"]
    lines = [f"| probe (bound {bound} eV/A) | runs above {bound} on held-out MP | held-out drift mean | max |",
             "|---|---|---|---|"]
    for p in probes:
        drifts = []
        for r in rows:
            c, held = r["curves"][p], r["curves"]["heldout_mp"]
            admitted = 0
            for i in range(1, len(c)):
                if c[i] > bound:
                    break
                admitted = i
            chosen = min(int(round(10 * picks.get((r["n"], r["seed"]), 1.0))), admitted)
            drifts.append(held[chosen])
        above = sum(d > bound for d in drifts)
        lines.append(f"| {p} | {above}/{len(drifts)} | {np.mean(drifts):.4f} | {max(drifts):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MATGL_CAL_DATA", "../shared/data")))
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("MATGL_CAL_MODELS", "../shared/models")))
    parser.add_argument("--method", choices=["cal", "finetune"], default="cal")
    parser.add_argument("--n-target", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bound", type=float, default=0.02)
    parser.add_argument("--json", type=Path, required=True, help="curves file (resumable)")
    parser.add_argument("--picks", type=Path, default=None,
                        help="bench_finetune results whose --picks-method records give the validation picks")
    parser.add_argument("--picks-method", default=None,
                        help="records of the default call made with the old probe "
                        "(default: <method>+defaults-probe0.05)")
    args = parser.parse_args(argv)
    rows = curves(args)
    picks: dict[tuple[int, int], float] = {}
    if args.picks is not None:
        name = args.picks_method or f"{args.method}+defaults-probe0.05"
        for r in json.loads(args.picks.read_text()):
            if r["method"] == name and "wise_alpha" in r:
                picks[(r["n_target"], r["seed"])] = r["wise_alpha"]
    print(summary(rows, picks, args.bound))
    return 0


if __name__ == "__main__":
    sys.exit(main())

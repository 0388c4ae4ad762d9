"""Run by tests/test_resume_ddp.py: CAL training on 2 CPU processes (gloo) with Lightning's "ddp"
strategy, which re-launches this script for rank 1. Each rank saves its costs and parameters after every
epoch. Usage: ddp_worker.py OUT_DIR [PLACEMENT]."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from matgl.utils.training import ModelLightningModule  # noqa: E402

import builders as b  # noqa: E402
from matgl_cal import AdversarialAugmentation  # noqa: E402


class CostRecorder(L.Callback):
    def __init__(self, out: Path, cal: AdversarialAugmentation) -> None:
        self.out = out
        self.cal = cal

    def on_train_epoch_end(self, trainer, pl_module):
        costs = self.cal.costs
        if costs.costs is None:  # warm-up epoch
            return
        record = {"costs": costs.costs.clone(), "gamma": costs.gamma, "n_updates": costs.n_updates,
                  "ranking": self.cal.ranking.clone(), "world_size": trainer.world_size,
                  "params": [p.detach().clone() for p in pl_module.parameters()]}
        torch.save(record, self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt")


def main(out: Path, placement: str) -> None:
    torch.set_num_threads(1)
    ds = b.property_dataset(16)
    train, val = b.loaders(ds, 4)
    cal = AdversarialAugmentation(warmup_epochs=1, adversarial_batches=2, rerank_every=1, hardness="loss",
                                 placement=placement)
    torch.manual_seed(0)
    module = ModelLightningModule(model=b.tiny_model("M3GNet"), lr=2e-3)
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", callbacks=[cal, CostRecorder(out, cal)],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(module, train, val)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "extra_steps")

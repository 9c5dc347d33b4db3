"""Worker for tests/test_distributed.py: a few Vaccine steps on a tiny model, data parallel or not.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_dist_check.py OUT`` (2 CPU
processes, gloo) or ``python tests/_dist_check.py OUT`` (one process), with the repository on ``PYTHONPATH``.
The global batch is the whole 4-row dataset at every step (2 rows per process with 2 processes, 4 rows with
one), so both runs must end with the same weights if the perturbation is the single-process one on the global
batch. Writes
``OUT/weights_rank{r}.pt``, ``OUT/init.pt`` (rank 0) and ``OUT/log_rank{r}.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def main(out: str, model_name: str = "tiny-llama", steps: int = 3, global_batch: int = 4) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset

    from vaccine_lib.models import build_tiny_model, load_tokenizer
    from vaccine_lib.vaccine import VaccineConfig, VaccineTrainer

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    tok = load_tokenizer(model_name)
    model = build_tiny_model(model_name, tok, seed=0)
    if rank == 0:
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, out_dir / "init.pt")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 400, (global_batch, 12), generator=g).tolist()
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 12] * global_batch, "labels": ids})
    args = VaccineConfig(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=global_batch // world, max_steps=steps,
        learning_rate=1e-2, lr_scheduler_type="constant", max_grad_norm=0.0, use_cpu=True, report_to=[],
        save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0, rho=2.0, dataloader_num_workers=0,
        ddp_backend="gloo" if world > 1 else None,
    )
    trainer = VaccineTrainer(model=model, args=args, train_dataset=ds)
    trainer.train()
    state = {k: v.detach().cpu().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
    torch.save(state, out_dir / f"weights_rank{rank}.pt")
    (out_dir / f"log_rank{rank}.json").write_text(json.dumps({
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "log_history": trainer.state.log_history,
    }))


if __name__ == "__main__":
    main(sys.argv[1])

"""Run under ``torchrun --nproc_per_node 2``: one micro-step of the global batch, gradients saved.

Usage: ddp_worker.py MODEL DATASET NEGATIVES OUT PER_PROCESS_BATCH
Writes OUT/rank-{rank}.pt with the loss, this process's slice of query ids, and the summed
gradients (dropout off, so a single process with the whole batch must give the same numbers).
"""

import sys

import torch

from training.encoders import DenseTrainEncoder
from training.trainer import TrainConfig, Trainer


def main() -> None:
    model, dataset, negatives, out, batch = sys.argv[1:6]
    torch.set_num_threads(1)
    config = TrainConfig(model=model, dataset=dataset, negatives=negatives, out=out, batch_size=int(batch),
                         group_size=3, dev_fraction=0, device="cpu", seed=3, max_steps=1)
    trainer = Trainer(config, lambda: DenseTrainEncoder(model, max_length=32, query_max_length=16))
    trainer.model.eval()  # no dropout: the comparison is exact up to float rounding
    groups = trainer.plan.batch(0)
    parts = trainer.micro_step(groups)
    from training import distributed

    distributed.sum_gradients(trainer.model, trainer.dist)
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    torch.save({"loss": parts["loss"], "world": trainer.dist.world,
                "local": [g.qid for g in trainer.local_slice(groups)], "grads": grads},
               f"{out}/rank-{trainer.dist.rank}.pt")


if __name__ == "__main__":
    main()

"""Helper for tests/test_scaling.py: one optimiser step on one global batch, either under
torchrun (DDP, via the real Trainer.train) or in a single process that feeds the same two
per-rank micro-batches and averages their gradients."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from options import MonodepthOptions  # noqa: E402
from trainer import EpochSampler, Trainer  # noqa: E402


def main():
    mode, out, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    opt = MonodepthOptions().parse(argv)
    trainer = Trainer(opt)
    if mode == "ddp":
        trainer.train()  # --max_steps 1
        if trainer.rank == 0:
            torch.save({k: v.detach().cpu() for k, v in trainer.method.named_parameters()}, out)
        return
    rng = torch.get_rng_state()
    trainer.optimizer.zero_grad(set_to_none=True)
    world = 2
    for rank in range(world):
        sampler = EpochSampler(len(trainer.train_dataset), opt.batch_size, True, opt.seed, rank, world)
        g = torch.Generator()
        g.manual_seed(opt.seed)
        loader = torch.utils.data.DataLoader(trainer.train_dataset, opt.batch_size, sampler=sampler, generator=g)
        torch.set_rng_state(rng)  # each rank draws the same noise in its first step
        _, _, loss, _, _ = trainer.process_batch(next(iter(loader)))
        (loss / world).backward()
    trainer.optimizer.step()
    torch.save({k: v.detach().cpu() for k, v in trainer.method.named_parameters()}, out)


if __name__ == "__main__":
    main()

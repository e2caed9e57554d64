"""Epoch-seeded, rank-split, resumable sampling; the torchrun process context."""
import os

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Shuffled indices that depend on (seed, epoch) only, split over DDP ranks, and able to
    start part-way through an epoch (resume). Yields (index, epoch) pairs so that the
    dataset can derive each item's augmentation from them.

    depth_gt_batches: None, or f(batch, step) -> whether the items of this epoch's batch
    `batch` (the run's step `step`) carry the ground truth; then it yields (index, epoch,
    flag) triples."""

    def __init__(self, n, batch_size, shuffle=True, seed=0, rank=0, world_size=1):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch, self.first_step = 0, 0, 0
        self.per_rank = n // world_size
        self.depth_gt_batches = None

    def set_epoch(self, epoch, start_batch=0, first_step=None):
        """first_step: the run's step at batch start_batch (default: epoch x batches per epoch)."""
        self.epoch, self.start_batch = epoch, start_batch
        self.first_step = epoch * (self.per_rank // self.batch_size) + start_batch if first_step is None else first_step

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order = order[self.rank:self.per_rank * self.world_size:self.world_size]
        flag = self.depth_gt_batches
        for k, i in enumerate(order[self.start_batch * self.batch_size:]):
            if flag is None:
                yield (i, self.epoch)
            else:
                batch = self.start_batch + k // self.batch_size
                yield (i, self.epoch, bool(flag(batch, self.first_step + batch - self.start_batch)))

    def __len__(self):
        return self.per_rank - self.start_batch * self.batch_size


def distributed_context():
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0

"""Helper for tests/test_bdedepth.py: build the real Trainer from the given arguments (under
torchrun) and have rank 0 write what reached the model: the process count, --sync_bn as
parsed, the Trainer's decision, and its BatchNorm / SyncBatchNorm layer counts."""
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from options import MonodepthOptions  # noqa: E402
from trainer import Trainer  # noqa: E402


def main():
    out, argv = sys.argv[1], sys.argv[2:]
    trainer = Trainer(MonodepthOptions().parse(argv))
    modules = list(trainer.method.modules())
    record = {"world_size": trainer.world_size, "sync_bn_option": trainer.opt.sync_bn, "converted": trainer.sync_bn,
              "batchnorm": sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules),
              "syncbatchnorm": sum(isinstance(m, torch.nn.SyncBatchNorm) for m in modules),
              "ddp": isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)}
    if trainer.rank == 0:
        with open(out, "w") as f:
            json.dump(record, f)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

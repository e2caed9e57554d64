"""Helper for tests/test_dynamic_mf_reference.py: the dynamic-scene loss under a 2-process
gloo DDP run, pooled over the processes (--pool_loss_across_processes) and per process, and
the one-process loss of the whole batch, on a tiny network that outputs 4 scales of inverse
depth for two branches. Rank 0 writes the losses and gradients to a file."""
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from losses import dynamic_mf_global_loss, dynamic_mf_total_loss

HEIGHT, WIDTH = 32, 64
VNL_SEED = 7


class TwoBranchHead(nn.Module):
    """B x 3 x H x W -> (multi, mono): 4 inverse depths each in [0.0025, 0.33], full size first."""

    def __init__(self):
        super().__init__()
        self.multi, self.mono = nn.Conv2d(3, 1, 3, padding=1), nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        out = []
        for conv in (self.multi, self.mono):
            y = 0.0025 + 0.3275 * torch.sigmoid(conv(x) - 2)
            out.append([y] + [F.avg_pool2d(y, 2 ** s) for s in (1, 2, 3)])
        return out


def batch(n):
    """n samples: images, sparse GT of a tilted plane (about a third of the pixels), K."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, HEIGHT, WIDTH, generator=g)
    rows = torch.arange(HEIGHT, dtype=torch.float32).view(1, 1, -1, 1)
    cols = torch.arange(WIDTH, dtype=torch.float32).view(1, 1, 1, -1)
    depth = 60 / (1 + rows / 4 + cols / 40 * torch.rand(n, 1, 1, 1, generator=g))
    depth = depth * (1 + 0.05 * torch.randn(n, 1, HEIGHT, WIDTH, generator=g))
    depth = depth * torch.linspace(0.4, 2.5, n).view(n, 1, 1, 1)  # each sample its own scale
    depth = depth * (torch.rand(n, 1, HEIGHT, WIDTH, generator=g) < 0.35)
    inv = torch.where(depth > 0, 1 / depth.clamp(min=1e-6), torch.zeros_like(depth))
    K = torch.tensor([[0.58 * WIDTH, 0, 0.5 * WIDTH, 0], [0, 1.92 * HEIGHT, 0.5 * HEIGHT, 0], [0, 0, 1, 0],
                      [0, 0, 0, 1.0]]).repeat(n, 1, 1)
    K[:, 0, 0] += torch.arange(n, dtype=torch.float32)  # each sample its own focal length
    return images, inv, depth, K


def flat_grad(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def one_process(per_rank, world, reference_intrinsics):
    """The loss of the whole batch in one process and its gradient."""
    torch.manual_seed(1)
    model = TwoBranchHead()
    images, inv, depth, K = batch(per_rank * world)
    multi, mono = model(images)
    loss, _ = dynamic_mf_total_loss(multi, mono, inv, depth, K, generator=torch.Generator().manual_seed(VNL_SEED),
                                    reference_intrinsics=reference_intrinsics)
    loss.backward()
    return {"losses": [float(loss.detach())], "grad": flat_grad(model)}


def main(rank, world, port, out, per_rank=2):
    """Both VNL intrinsics modes (each sample's own K, and --reference_vnl_intrinsics)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(1)
    model = TwoBranchHead()
    ddp = nn.parallel.DistributedDataParallel(model)
    images, inv, depth, K = batch(per_rank * world)
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    result = {}
    for reference_intrinsics in (False, True):
        for name, loss_fn in (("pooled", dynamic_mf_global_loss), ("per_process", dynamic_mf_total_loss)):
            model.zero_grad(set_to_none=True)
            multi, mono = ddp(images[mine])
            loss, _ = loss_fn(multi, mono, inv[mine], depth[mine], K[mine],
                              generator=torch.Generator().manual_seed(VNL_SEED),
                              reference_intrinsics=reference_intrinsics)
            loss.backward()  # DDP averages the gradients over the processes
            losses = [torch.zeros(1) for _ in range(world)]
            dist.all_gather(losses, loss.detach().reshape(1))
            result[name, reference_intrinsics] = {"losses": [float(v) for v in losses], "grad": flat_grad(model)}
    # no generator: every process draws the VNL triplets alike (rank 0's seed, broadcast),
    # whatever its own random state
    torch.manual_seed(100 + rank)
    with torch.no_grad():
        multi, mono = model(images[mine])
        loss, _ = dynamic_mf_global_loss(multi, mono, inv[mine], depth[mine], K[mine])
    losses = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(losses, loss.reshape(1))
    result["shared_draw_losses"] = [float(v) for v in losses]
    dist.destroy_process_group()
    if rank == 0:
        for reference_intrinsics in (False, True):
            result["single", reference_intrinsics] = one_process(per_rank, world, reference_intrinsics)
        torch.save(result, out)

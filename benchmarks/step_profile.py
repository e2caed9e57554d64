"""Where one training step's time goes: torch.profiler over the real Trainer's step, as tables.

    python benchmarks/step_profile.py --data_path WORLD [--height 192 --width 640 --batch_size 12]
        [--device cuda] [--steps 5] [--warmup 5] [--top 20] [any train.py option, e.g. --method srd --amp bf16]

The step is train_throughput.py's ceiling row (one batch reused: no input cost): method ->
losses -> backward -> optimiser, after `--warmup` untimed steps. Prints the wall time per
step (--steps steps without the profiler, then the same number under it for the tables),
the time the GPU spent in kernels per step (its busy share: low means the step waits
on the host), the host-device synchronisations per step (each one stalls the host until the
GPU catches up), and the operations with the most self time on the host and on the device.
The floating-point operations of one training example (forward and backward, counted by
torch.utils.flop_counter: convolutions and matrix products) and the rate they were done at.
"""
import argparse
import os
import sys
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_throughput import steady_trainer, train_step as step  # noqa: E402

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def _device_us(event):
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)


def table(rows, title, unit_total, top):
    print(f"\n{title}\n| operation | calls per step | self time per step ms | share % |\n|---|---|---|---|")
    for name, calls, ms in rows[:top]:
        print(f"| {name[:70]} | {calls:.0f} | {ms:.2f} | {100 * ms / max(unit_total, 1e-9):.1f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", required=True, help="a synthetic world (python -m synthetic_world --out DIR)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=5, help="profiled steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN's autotuning, caches)")
    p.add_argument("--top", type=int, default=20, help="rows per table")
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--batch_size", type=int, default=12)
    args, extra = p.parse_known_args(argv)
    if not os.path.isfile(os.path.join(args.data_path, "splits", "synthetic", "train_files.txt")):
        raise SystemExit(f"--data_path {args.data_path}: no splits/synthetic/train_files.txt there "
                         "(write a world with: python -m synthetic_world --out DIR)")
    trainer = steady_trainer(args.data_path, args.height, args.width, args.batch_size, args.device, 0,
                             ["--fast_loader"] + extra)
    inputs = next(iter(trainer.train_loader))
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(args.warmup):
        step(trainer, inputs)
    sync()
    with FlopCounterMode(display=False) as counter:
        step(trainer, inputs)
    flops = counter.get_total_flops() / args.batch_size
    sync()
    started = time.perf_counter()  # the wall time without the profiler's own cost per operation
    for _ in range(args.steps):
        step(trainer, inputs)
    sync()
    wall_ms = (time.perf_counter() - started) * 1000 / args.steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step(trainer, inputs)
        sync()
    events = prof.key_averages()
    n = args.steps
    # the device's time: its own events (kernels, copies) only; an operation's row also carries
    # the time of the kernels it launched, which would count them twice
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    device_ms = sum(_device_us(e) for e in kernels) / 1000 / n
    host_rows = sorted(((e.key, e.count / n, e.self_cpu_time_total / 1000 / n) for e in events
                        if e.device_type == DeviceType.CPU), key=lambda r: -r[2])
    syncs = {e.key: e.count / n for e in events if e.key in SYNC_EVENTS}
    method = trainer.opt.method
    print(f"\n{method}, {args.width}x{args.height}, batch {args.batch_size}, {trainer.device.type}, "
          f"amp {trainer.opt.amp}: {wall_ms:.1f} ms per step ({args.batch_size * 1000 / wall_ms:.1f} examples/s)")
    print(f"{flops / 1e9:.1f} GFLOP per training example (forward + backward; convolutions and matrix "
          f"products): {flops * args.batch_size / wall_ms / 1e9:.2f} TFLOP/s done")
    if cuda:
        print(f"device kernel time {device_ms:.1f} ms per step: the GPU is busy {100 * device_ms / wall_ms:.0f} % of "
              f"the step; host-device synchronisations per step: "
              + (", ".join(f"{k} {v:.0f}" for k, v in syncs.items()) or "none"))
    host_ms = sum(r[2] for r in host_rows)
    aten = sum(r[1] for r in host_rows if r[0].startswith("aten::"))
    print(f"host: {aten:.0f} aten operations per step (nested ones included), {host_ms:.1f} ms self time")
    table(host_rows, "host (CPU) self time, most first", host_ms, args.top)
    if cuda:
        dev_rows = sorted(((e.key, e.count / n, _device_us(e) / 1000 / n) for e in kernels), key=lambda r: -r[2])
        table(dev_rows, "device (GPU) kernels and copies, most time first", device_ms, args.top)


if __name__ == "__main__":
    main()

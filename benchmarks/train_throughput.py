"""Training throughput: examples/s, data-wait fraction and peak memory, as a table.

    python benchmarks/train_throughput.py [--data_path synthetic_data] [--steps 20] [--device cpu|cuda]
        [--methods monodepth2 srd "bdedepth --use_local_crop --use_patch_reshuffle"] [--paths fast ceiling]

Runs the real Trainer's step (loader -> method -> losses -> backward -> Adam) for a few
configurations on the synthetic world (generated into a temporary folder if no
--data_path is given) and prints one row per configuration. Timings exclude warm-up. Each
method runs in its steady state: after one epoch end (SRD: with its teacher).
"""
import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from queue import Empty

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets import synthetic_world as sw  # noqa: E402
from options import MonodepthOptions  # noqa: E402
from trainer import Trainer, never  # noqa: E402

CONFIGS = [  # (name, height, width, batch)
    ("mono R18 320x96 b4", 96, 320, 4),
    ("mono R18 640x192 b12", 192, 640, 12),
]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill_cache(data_path, height, width, flags):
    split = os.path.join(data_path, "splits", "synthetic")
    trainer = Trainer(MonodepthOptions().parse([
        "--data_path", data_path, "--split", split, *_ext(flags), "--height", str(height), "--width", str(width),
        "--weights_init", "scratch", "--num_workers", "0", "--log_dir", tempfile.mkdtemp(), "--no_progress",
        "--no_cuda"] + flags))
    for i in range(len(trainer.train_dataset)):
        trainer.train_dataset[i]


def _ext(flags):
    """PNG input for every row but --decode_on_device, which reads the JPEG copies."""
    return [] if "--decode_on_device" in flags else ["--png"]


def _batches(trainer, reuse):
    """The loader's batches, or (reuse=True) its first batch over and over: no input cost at
    all, the ceiling any input path can reach for this model and device."""
    if reuse:
        first = next(iter(trainer.train_loader))
        while True:
            yield first
    while True:
        yield from trainer.train_loader


def steady_trainer(data_path, height, width, batch, device, workers, extra):
    """A Trainer on the synthetic world's split, in its steady state."""
    split = os.path.join(data_path, "splits", "synthetic")
    argv = ["--data_path", data_path, "--split", split, *_ext(extra), "--height", str(height), "--width", str(width),
            "--batch_size", str(batch), "--weights_init", "scratch", "--num_workers", str(workers),
            "--log_dir", tempfile.mkdtemp(), "--no_progress"] + extra
    if device == "cpu":
        argv.append("--no_cuda")
    trainer = Trainer(MonodepthOptions().parse(argv))
    trainer.method.on_epoch_end(0)  # the state of epochs >= 1 (SRD's teacher exists from then on)
    # no batch carries the ground truth that training reads for log steps only (batch 0 would,
    # and the ceiling reuses it)
    trainer.train_sampler.depth_gt_batches = never
    return trainer


def train_step(trainer, inputs):
    """One training step as the Trainer takes it: method, losses, backward, optimiser."""
    _, _, loss, _, _ = trainer.process_batch(inputs)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()


def run(data_path, height, width, batch, steps, warmup, device, workers, extra, reuse=False):
    trainer = steady_trainer(data_path, height, width, batch, device, workers, extra)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    wait = compute = 0.0
    done = 0
    t_data = time.perf_counter()
    for inputs in _batches(trainer, reuse):
        t0 = time.perf_counter()
        train_step(trainer, inputs)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        if done >= warmup:
            wait += t0 - t_data
            compute += t1 - t0
        done += 1
        t_data = time.perf_counter()
        if done >= steps + warmup:
            break
    total = wait + compute
    mem = torch.cuda.max_memory_allocated() / 2 ** 20 if trainer.device.type == "cuda" else peak_rss_mb()
    return steps * batch / total, wait / total, mem, trainer.device.type


def _child(queue, *args):
    queue.put(run(*args))


def run_in_child(*args):
    """run() in a fresh (non-daemonic, so it may start loader workers) spawned process."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, *args))
    proc.start()
    while True:  # a child that died (an exception, the out-of-memory killer) never answers
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not proc.is_alive():
                try:  # it may have answered just before it ended
                    result = queue.get(timeout=1)
                    break
                except Empty:
                    pass
                why = (f"was killed by signal {-proc.exitcode} (the out-of-memory killer sends 9)"
                       if proc.exitcode < 0 else f"stopped with exit code {proc.exitcode} (its traceback is above)")
                raise SystemExit(f"train_throughput: the run with {' '.join(args[-2])} {why}")
    proc.join()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", help="a synthetic world (default: generate one)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--configs", nargs="+", help="subset of configuration names (substring match)")
    p.add_argument("--methods", nargs="+", default=["monodepth2"],
                   help="methods to compare: --method names, each optionally followed by its own flags in "
                        "one quoted argument (e.g. \"bdedepth --encoder resnet_context\")")
    p.add_argument("--paths", nargs="+", default=["default", "fast", "device_decode", "ceiling"],
                   choices=["default", "fast", "device_decode", "ceiling"],
                   help="input paths to compare: monodepth2's loader, --fast_loader with a cache, "
                        "--fast_loader --decode_on_device (JPEG decoded by the training process), and "
                        "the ceiling (one batch reused: the step alone, no input cost)")
    args, extra = p.parse_known_args()
    data_path = args.data_path
    if data_path is None:
        data_path = os.path.join(tempfile.mkdtemp(), "world")
        sw.generate(sw.Config(out=data_path, drives=2, frames=30, jpg=True), progress=False)
    rows = []
    cache = tempfile.mkdtemp()
    for name, h, w, b in CONFIGS:
        if args.configs and not any(c in name for c in args.configs):
            continue
        for method, path in [(m, p) for m in args.methods for p in args.paths]:
            # the ceiling reuses one batch: it needs no cache
            path_flags = {"default": [], "device_decode": ["--fast_loader", "--decode_on_device"],
                          "ceiling": ["--fast_loader"]}.get(path, ["--fast_loader", "--cache_dir", cache])
            flags = extra + ["--method"] + method.split() + path_flags
            if "--cache_dir" in flags:  # fill the cache first: the table reports the steady state
                fill_cache(data_path, h, w, flags)
            # a fresh process per row: peak RSS (ru_maxrss) is per process, never reset
            ex_s, wait, mem, dev = run_in_child(data_path, h, w, b, args.steps, args.warmup, args.device,
                                                args.num_workers, flags, path == "ceiling")
            rows.append((name, method, path, dev, ex_s, 100 * wait, mem))
    mem_label = "peak GPU MiB" if args.device == "cuda" else "peak RSS MiB (main process)"
    print(f"\n| configuration | method | input path | device | examples/s | data wait % | {mem_label} |")
    print("|---|---|---|---|---|---|---|")
    for name, method, path, dev, ex_s, wait, mem in rows:
        print(f"| {name} | {method} | {path} | {dev} | {ex_s:.2f} | {wait:.1f} | {mem:.0f} |")


if __name__ == "__main__":
    main()

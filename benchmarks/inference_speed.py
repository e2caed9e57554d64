"""Inference speed of every method: ms/frame and frames/s, eager / torch.compile /
TorchScript / ONNX Runtime, at two sizes and two batch sizes, as Markdown tables.

    python benchmarks/inference_speed.py                                  # CPU, everything
    python benchmarks/inference_speed.py --repeats 3 --warmup 1 --threads 1
    python benchmarks/inference_speed.py --methods monodepth2 manydepth --sizes 640x192 --batches 1
    python benchmarks/inference_speed.py --backends eager onnxruntime --batches_at 640x192=1
    python benchmarks/inference_speed.py --device cuda                    # ONNX Runtime needs onnxruntime-gpu there

Each method is built from its paper preset (configs/, at each --sizes size) with random
weights: speed does not depend on the weights' values. What is timed is the inference graph
of export_model.py (Method.predict's inputs -> depth and disparity; multi-frame methods
with their source frames, K and poses), in each backend:
- eager: PredictGraph under torch.inference_mode;
- torch.compile: the same module through torch.compile (inductor); its compile time (the
  first call less a steady call) is reported separately, once per batch size (each shape
  compiles), and it is not among the warm-up calls;
- TorchScript: export_model.py's torch.jit.trace file, loaded back;
- ONNX Runtime: export_model.py's ONNX file in onnxruntime (CPU; CUDA with --device cuda
  where onnxruntime-gpu is installed).
Per cell: --warmup calls, then --repeats timed calls (synchronised on CUDA); the median.
A backend that fails (an export error, a missing C++ compiler for torch.compile, out of
memory) gives "failed: <reason>" in its cells; the others still run.
The machine (CPU, cores, threads, library versions) and its load average before and after
are printed with the tables: on a shared machine, read the numbers with the load.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import export_model  # noqa: E402

# method -> the options of its paper preset (random weights, the size set per table)
METHODS = {
    "monodepth2": ["--config", "monodepth2_mono_640x192"],
    "srd": ["--config", "srd_resnet18_640x192"],
    "bdedepth": ["--config", "bdedepth_hrnet18_640x192"],
    "manydepth": ["--config", "manydepth_resnet18_640x192"],
    "mism": ["--config", "mism_teacher_hrnet18_640x192"],  # a teacher or student folder: SNet + pose + MNet
    "dynamic_mf": ["--config", "dynamic_mf_resnet18_256x512"],
}
DESCRIPTION = {
    "monodepth2": "Monodepth2 ResNet-18 (also Depth Hints)",
    "srd": "SRD ResNet-18",
    "bdedepth": "BDEdepth HRNet-18",
    "manydepth": "ManyDepth ResNet-18, 96 bins",
    "mism": "MISM HRNet-18 SNet + MNet",
    "dynamic_mf": "dynamic_mf ResNet-18",
}
BACKENDS = ("eager", "compile", "torchscript", "onnxruntime")
BACKEND_NAMES = {"eager": "eager", "compile": "torch.compile", "torchscript": "TorchScript",
                 "onnxruntime": "ONNX Runtime"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--sizes", nargs="+", default=["320x96", "640x192"], help="WIDTHxHEIGHT")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--batches_at", nargs="+", default=[], metavar="SIZE=B,B",
                   help="other batch sizes at one size, e.g. 640x192=1 (batch 16 only at the other sizes)")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per cell (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before them")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, help="intra-op threads of torch and onnxruntime (default: torch's)")
    p.add_argument("--json", help="also write every cell here")
    args = p.parse_args(argv)
    for size in args.sizes:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            p.error(f"--sizes {size}: WIDTHxHEIGHT, e.g. 640x192")
        if w % 32 or h % 32 or w <= 0 or h <= 0:
            p.error(f"--sizes {size}: width and height must be positive multiples of 32")
    batches_at = {}
    for item in args.batches_at:
        try:
            size, values = item.lower().split("=")
            batches_at[size] = [int(v) for v in values.split(",")]
        except ValueError:
            p.error(f"--batches_at {item}: SIZE=B,B, e.g. 640x192=1")
        if size not in [s.lower() for s in args.sizes] or min(batches_at[size]) < 1:
            p.error(f"--batches_at {item}: a size of --sizes and batch sizes >= 1")
    args.batches_at = batches_at
    if min(args.batches) < 1:
        p.error("--batches: batch sizes >= 1")
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    return args


def build(name, width, height):
    from methods import build_method
    from options import MonodepthOptions
    opt = MonodepthOptions().parse(METHODS[name] + ["--height", str(height), "--width", str(width),
                                                    "--weights_init", "scratch"])
    torch.manual_seed(0)
    return build_method(opt).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, inputs, warmup, repeats, device):
    """Median seconds per call of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn(*inputs)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn(*inputs)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine(device, threads):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = f"PyTorch {torch.__version__}"
    try:
        import onnxruntime
        versions += f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        pass
    where = f"{cpu}, {os.cpu_count()} cores, {threads} intra-op thread(s)"
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (host: {where})"
    return f"{where}; {versions}"


def failure(e):
    """A table cell's reason: the exception's first line, short and without table bars."""
    if isinstance(e, SystemExit):
        text = str(e.code if e.code is not None else "")
    else:
        text = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    text = text.replace("|", "/").strip()
    return ("failed: " + text)[:160]


def run_method(name, width, height, batches, args, device):
    """{(batch, backend): (seconds per call, compile seconds or None) or a "failed: ..."
    string} of one method at one size."""
    method = build(name, width, height).to(device)
    graph = export_model.PredictGraph(method).eval()
    results, runners = {}, {}
    tmp = tempfile.mkdtemp(prefix="inference_speed_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runners["eager"] = graph
        for backend, fmt, suffix in (("torchscript", "torchscript", "pt"), ("onnxruntime", "onnx", "onnx")):
            if backend not in args.backends:
                continue
            path = os.path.join(tmp, f"{name}.{suffix}")
            try:
                export_model.export(method, fmt, path)  # traced on `device`
                runners[backend] = export_model.ExportedModel(path, device, threads=args.threads)
                if backend == "onnxruntime" and device.type == "cuda" and \
                        "CUDAExecutionProvider" not in runners[backend].session.get_providers():
                    runners[backend] = "failed: onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)"
            except (Exception, SystemExit) as e:  # noqa: BLE001 - an export failure is a cell, not the end
                runners[backend] = failure(e)
            finally:
                if os.path.exists(path):
                    os.remove(path)
        for batch in batches:
            inputs = tuple(x.to(device) for x in export_model.example_inputs(method, batch))
            for backend in args.backends:
                try:
                    with torch.inference_mode():
                        if backend == "compile":
                            # the first call compiles (inductor; a C++ compiler on the CPU): timed
                            # on its own, less a steady call, and not among the warm-up calls
                            compiled = torch.compile(graph)
                            sync(device)
                            start = time.perf_counter()
                            compiled(*inputs)
                            sync(device)
                            first = time.perf_counter() - start
                            seconds = timed(compiled, inputs, args.warmup, args.repeats, device)
                            results[batch, backend] = (seconds, max(first - seconds, 0.0))
                        elif isinstance(runners[backend], str):
                            results[batch, backend] = runners[backend]
                        else:
                            results[batch, backend] = (timed(runners[backend], inputs, args.warmup, args.repeats,
                                                             device), None)
                except Exception as e:  # noqa: BLE001 - a compiler or runtime failure is a cell
                    results[batch, backend] = failure(e)
                entry = results[batch, backend]
                print(f"   {name} {width}x{height} batch {batch} {BACKEND_NAMES[backend]}: {cell(entry, batch)}"
                      + (f", compiled in {entry[1]:.1f} s" if isinstance(entry, tuple) and entry[1] is not None
                         else ""), file=sys.stderr, flush=True)
            if "compile" in args.backends:
                torch._dynamo.reset()  # the next batch size compiles afresh (static shapes), timed on its own
    os.rmdir(tmp)
    return results


def cell(entry, batch):
    if entry is None:
        return "-"
    if isinstance(entry, str):
        return entry
    seconds = entry[0]
    return f"{1000 * seconds / batch:.1f} ms ({batch / seconds:.1f}/s)"


def table(size, rows, batches, args):
    """One Markdown table: a row per method and batch, a column per backend (ms/frame and
    frames/s), and torch.compile's compile time."""
    backends = list(args.backends)
    header = ["method", "batch"] + [f"{BACKEND_NAMES[b]} ms/frame (frames/s)" for b in backends]
    if "compile" in backends:
        header.append("torch.compile: compile s")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, results in rows:
        for batch in batches:
            cells = [DESCRIPTION[name], str(batch)] + [cell(results.get((batch, b)), batch) for b in backends]
            if "compile" in backends:
                entry = results.get((batch, "compile"))
                cells.append(f"{entry[1]:.1f}" if isinstance(entry, tuple) else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return f"### {size}\n\n" + "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = args.threads or torch.get_num_threads()
    device = torch.device(args.device)
    load_before = os.getloadavg()
    start = time.time()
    out, cells = [], []
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        batches = args.batches_at.get(size.lower(), args.batches)
        rows = []
        for name in args.methods:
            print(f"-> {name} {size} ...", file=sys.stderr, flush=True)
            results = run_method(name, width, height, batches, args, device)
            rows.append((name, results))
            for (b, k), v in results.items():
                cell_ = {"method": name, "size": size, "batch": b, "backend": k}
                if isinstance(v, str):
                    cell_["failed"] = v
                else:
                    cell_.update(seconds_per_call=v[0], ms_per_frame=1000 * v[0] / b, frames_per_s=b / v[0],
                                 compile_s=v[1])
                cells.append(cell_)
        out.append(table(size, rows, batches, args))
    load_after = os.getloadavg()
    header = (f"Inference speed on {machine(device, args.threads)}; random-init weights (speed does not depend "
              f"on them); median of {args.repeats} calls after {args.warmup} warm-up call(s); load average "
              f"(1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after; {time.time() - start:.0f} s in all.")
    print(header + "\n\n" + "\n\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": header, "cells": cells}, f, indent=1)
    return cells


if __name__ == "__main__":
    main()

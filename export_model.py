"""Export a weight folder's inference graph (Method.predict) to ONNX or TorchScript.

    python export_model.py --load_weights_folder W --format onnx --out model.onnx
    python export_model.py --load_weights_folder W --format torchscript --out model.pt
    python export_model.py --load_weights_folder W --format onnx --height 320 --width 1024 --out model.onnx
    python export_model.py --load_weights_folder W_mism --single_frame --format onnx --out snet.onnx

The exported model takes plain tensors, positionally, in the order of the method's
`export_inputs()` (ONNX input names: the batch keys joined by "_": color_0_0, color_-1_0,
K_2, inv_K_2, T_-1, missing_-1, ...) and returns (depth, disp), each B x 1 x H x W; the
batch dimension is dynamic, H and W are those of the export. Images are B x 3 x H x W RGB
in [0, 1]; K / inv_K B x 4 x 4 in pixels at their scale (K_2: the 1/4 size). The file
carries a JSON description (ONNX: metadata "depthkit"; TorchScript: extra file
"export.json"): the method, the size, each input's name, key and shape, the outputs.

ONNX goes through torch.onnx's TorchScript-based exporter by default (opset 17; every
method exports with it, in a few seconds); `--onnx_exporter dynamo` uses the torch.export
one (the same graphs, 4-8x slower to export here). TorchScript is torch.jit.trace. After
writing, the exported model is run beside the eager one on random inputs at batch 1 and 3
and the largest differences are printed (`--no_check` skips this).
"""
import argparse
import contextlib
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn

OUTPUT_NAMES = ("depth", "disp")
TRACE_BATCH = 2  # the example batch the graph is traced with (a batch of 1 could hide batch-sized shapes)
DEFAULT_OPSET = 17  # GridSample needs 16; 17 is the newest opset the TorchScript-based exporter fully covers


class PredictGraph(nn.Module):
    """Method.predict with positional tensors: forward(*tensors, in method.export_inputs()
    order) -> (depth, disp), each B x 1 x H x W (disp = 1 / depth where predict gives no
    disparity). Only predict's main output: the method's variants are not computed."""

    def __init__(self, method):
        super().__init__()
        self.method = method
        self.keys = [key for key, _ in method.export_inputs()]
        method.predict_variants = False  # a variant may cost a forward pass of its own

    def forward(self, *tensors):
        prediction = self.method.predict(dict(zip(self.keys, tensors)))
        depth = prediction["depth"]
        disp = prediction.get("disp")
        return depth, 1 / depth if disp is None else disp


def input_name(key):
    """("color", -1, 0) -> "color_-1_0", ("K", 2) -> "K_2"."""
    return "_".join(str(part) for part in key)


def example_inputs(method, batch, seed=0):
    """Tensors for method.export_inputs() at `batch`: images uniform in [0, 1], KITTI's mean
    K (and its inverse) at each key's scale, a pose 0.5 forward per frame step for
    ("T", f), zeros for anything else (e.g. ("missing", f): frames present)."""
    from datasets.kitti_dataset import KITTI_K
    g = torch.Generator().manual_seed(seed)
    out = []
    for key, shape in method.export_inputs():
        shape = tuple(batch if d == "B" else d for d in shape)
        kind = key[0]
        if kind in ("color", "color_aug"):
            x = torch.rand(shape, generator=g)
        elif kind in ("K", "inv_K"):
            K = KITTI_K.copy()
            K[0] *= method.opt.width // 2 ** key[1]
            K[1] *= method.opt.height // 2 ** key[1]
            x = torch.from_numpy(K if kind == "K" else np.linalg.pinv(K))[None].repeat(batch, 1, 1)
        elif kind == "T":
            x = torch.eye(4)[None].repeat(batch, 1, 1)
            x[:, 2, 3] = -0.5 * key[1]
        else:
            x = torch.zeros(shape)
        out.append(x.float())
    return tuple(out)


def describe(method, folder=None):
    """The JSON description an exported file carries."""
    return {"method": method.name, "weights_folder": folder, "height": method.opt.height, "width": method.opt.width,
            "inputs": [{"name": input_name(k), "key": list(k), "shape": list(s)} for k, s in method.export_inputs()],
            "outputs": [{"name": n, "shape": ["B", 1, method.opt.height, method.opt.width]} for n in OUTPUT_NAMES],
            "min_depth": method.opt.min_depth, "max_depth": method.opt.max_depth,
            "depth_units": depth_units(method)}


def depth_units(method):
    if method.depth_scale == 1.0:
        return "metres"
    if method.opt.use_stereo:
        return "stereo-trained: x 5.4 for metres"
    return "monocular: relative (scale by the median or a known height)"


def used_networks(method, example):
    """The names of method.models that one PredictGraph call runs (forward hooks)."""
    used, handles = set(), []
    for name, model in method.models.items():
        handles.append(model.register_forward_hook(lambda *_, name=name: used.add(name)))
    try:
        with torch.no_grad():
            PredictGraph(method).eval()(*example)
    finally:
        for h in handles:
            h.remove()
    return used


@contextlib.contextmanager
def only_networks(method, names):
    """method.models without the networks not in `names` for the duration (the traced
    TorchScript module keeps every submodule's weights, used or not)."""
    removed = {name: method.models[name] for name in list(method.models) if name not in names}
    for name in removed:
        del method.models[name]
    try:
        yield
    finally:
        for name, model in removed.items():
            method.models[name] = model


def export_error(method, fmt, e, opset=None):
    """SystemExit naming the method, what ONNX lacks, and what to do."""
    name = f"{type(method).__name__} (--method {method.name})"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, torch.onnx.errors.UnsupportedOperatorError):
        return SystemExit(f"{name} cannot be exported to ONNX opset {opset}: {first}. Export it with "
                          "--format torchscript, or with a newer --opset if one has the operator")
    return SystemExit(f"{name} could not be exported as {fmt} ({type(e).__name__}: {first[:500]}); try "
                      + ("--format torchscript" if fmt == "onnx" else "--format onnx"))


def export(method, fmt, path, opset=DEFAULT_OPSET, exporter="torchscript", folder=None):
    """Write `method`'s PredictGraph to `path` as "onnx" or "torchscript"; returns the
    description (describe). An exporter error -> SystemExit (export_error)."""
    graph = PredictGraph(method).eval()
    device = next(method.parameters()).device  # traced where the method is (a CUDA trace for a CUDA run)
    example = tuple(x.to(device) for x in example_inputs(method, TRACE_BATCH))
    info = describe(method, folder)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # tracer warnings (a tensor read as a Python number) and deprecation notices: the check
        # at two batch sizes (check_export) is what tells whether the graph is right
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            try:
                with only_networks(method, used_networks(method, example)):
                    traced = torch.jit.trace(graph, example, check_trace=False)
            except Exception as e:  # noqa: BLE001 - any tracing failure is named
                raise export_error(method, fmt, e) from None
            torch.jit.save(traced, path, _extra_files={"export.json": json.dumps(info)})
            return info
        if fmt != "onnx":
            raise SystemExit(f"--format {fmt}: onnx or torchscript")
        names = [x["name"] for x in info["inputs"]]
        try:
            if exporter == "dynamo":
                batch = torch.export.Dim("batch")
                torch.onnx.export(graph, example, path, dynamo=True, input_names=names, output_names=list(OUTPUT_NAMES),
                                  dynamic_shapes=(tuple({0: batch} for _ in names),), opset_version=max(opset, 18),
                                  verbose=False)
            else:
                torch.onnx.export(graph, example, path, dynamo=False, input_names=names,
                                  output_names=list(OUTPUT_NAMES), opset_version=opset,
                                  dynamic_axes={n: {0: "batch"} for n in names + list(OUTPUT_NAMES)})
        except torch.onnx.errors.OnnxExporterError as e:
            raise export_error(method, fmt, e, opset) from None
    import onnx
    model = onnx.load(path)
    entry = model.metadata_props.add()
    entry.key, entry.value = "depthkit", json.dumps(info)
    onnx.save(model, path)
    return info


class ExportedModel:
    """An exported file, run like PredictGraph: model(*tensors) -> (depth, disp) as torch
    tensors. ONNX runs in onnxruntime (CPU unless `device` is cuda and the CUDA provider is
    installed), TorchScript in torch."""

    def __init__(self, path, device="cpu", threads=None):
        self.path, self.device = path, torch.device(device)
        if path.endswith(".onnx"):
            try:
                import onnxruntime as ort
            except ImportError:
                raise SystemExit("onnxruntime is not installed: pip install -r requirements.txt") from None
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            options.log_severity_level = 3
            providers = ["CUDAExecutionProvider"] if self.device.type == "cuda" else []
            self.session = ort.InferenceSession(path, options, providers=providers + ["CPUExecutionProvider"])
            self.names = [i.name for i in self.session.get_inputs()]
            self.module = None
        else:
            extra = {"export.json": ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                self.module = torch.jit.load(path, map_location=self.device, _extra_files=extra)
            self.names = [x["name"] for x in json.loads(extra["export.json"])["inputs"]]

    def __call__(self, *tensors):
        if self.module is not None:
            with torch.no_grad():
                return tuple(self.module(*[t.to(self.device) for t in tensors]))
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.names, tensors)}
        return tuple(torch.from_numpy(x) for x in self.session.run(list(OUTPUT_NAMES), feeds))


def compare(method, exported, batches=(1, 3), seed=1):
    """{batch: (max |depth diff|, max |disp diff|, max relative diff of either)} between the
    eager PredictGraph and an exported model on example inputs."""
    graph = PredictGraph(method).eval()
    out = {}
    for b in batches:
        x = example_inputs(method, b, seed=seed + b)
        with torch.no_grad():
            eager = graph(*x)
        got = exported(*x)
        if any(g.shape != e.shape for g, e in zip(got, eager)):
            raise SystemExit(f"{exported.path}: outputs of shape {[tuple(g.shape) for g in got]} at batch {b}, "
                             f"eager {[tuple(e.shape) for e in eager]}")
        diffs = [float((g.float().cpu() - e.float()).abs().max()) for g, e in zip(got, eager)]
        rel = max(float(((g.float().cpu() - e.float()).abs() / e.float().abs().clamp(min=1e-12)).max())
                  for g, e in zip(got, eager))
        out[b] = (diffs[0], diffs[1], rel)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="export a weight folder's inference graph to ONNX or TorchScript",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--load_weights_folder", required=True, help="a weights_N folder of a trained model")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="the file to write (e.g. model.onnx, model.pt)")
    p.add_argument("--height", type=int, help="input height (default: the folder's)")
    p.add_argument("--width", type=int, help="input width (default: the folder's)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--onnx_exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="torch.onnx's exporter: the TorchScript-based one or the torch.export-based one")
    p.add_argument("--no_check", action="store_true", help="do not compare the exported model with the eager one")
    args, unknown = p.parse_known_args(argv)
    from evaluate_depth import method_inference_options
    args.method_overrides, unknown = method_inference_options(args.load_weights_folder, unknown)
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)} (a method's own inference options, e.g. "
                "--eval_teacher, --single_frame, are accepted for the methods that have them)")
    for name in ("height", "width"):
        value = getattr(args, name)
        if value is not None and (value <= 0 or value % 32):
            p.error(f"--{name} {value}: a positive multiple of 32 (the encoders downsample 32x)")
    return args


def main(argv=None):
    args = parse_args(argv)
    from methods import load_for_inference
    overrides = dict(args.method_overrides)
    overrides.update({k: getattr(args, k) for k in ("height", "width") if getattr(args, k)})
    method = load_for_inference(args.load_weights_folder, "cpu", **overrides)
    start = time.time()
    info = export(method, args.format, args.out, args.opset, args.onnx_exporter, folder=args.load_weights_folder)
    print(f"-> {type(method).__name__} {info['height']}x{info['width']} -> {args.out} ({args.format}, "
          f"{os.path.getsize(args.out) / 2 ** 20:.1f} MB, {time.time() - start:.1f} s)")
    print("   inputs:  " + ", ".join(f"{x['name']} {'x'.join(map(str, x['shape']))}" for x in info["inputs"]))
    print("   outputs: " + ", ".join(f"{x['name']} {'x'.join(map(str, x['shape']))}" for x in info["outputs"]))
    if not args.no_check:
        for b, (depth, disp, rel) in compare(method, ExportedModel(args.out)).items():
            print(f"   batch {b}: max |exported - eager| depth {depth:.2e}, disp {disp:.2e} (relative {rel:.2e})")
    return info


if __name__ == "__main__":
    main()
    sys.exit(0)

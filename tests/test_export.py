"""export_model.py: every method's inference graph (Method.predict) as ONNX and TorchScript,
with plain tensor inputs, a dynamic batch, outputs equal to the eager ones; the inputs each
method declares (export_inputs) are the batch entries its predict really reads; an operator
ONNX lacks is a named error.

The weight folders are the methods' synthetic presets at 64 x 96 (the smallest size every
network takes) with seeded random weights (written as training writes them: the networks' files and opt.json);
export does not depend on what the weights learnt."""
import json
import os

import pytest
import torch

import export_model
from methods import build_method, load_for_inference
from options import MonodepthOptions
from training.checkpoints import options_json

pytestmark = pytest.mark.usefixtures("one_thread")

# name -> the preset's options at a small size (mism_student adds its teacher's folder)
FOLDERS = {
    "monodepth2_mono": ["--config", "synthetic_mono"],
    "monodepth2_stereo": ["--config", "synthetic_quickstart"],
    "depth_hints": ["--method", "depth_hints", "--use_stereo", "--frame_ids", "0", "--weights_init", "scratch"],
    "srd": ["--config", "synthetic_srd"],
    "bdedepth": ["--config", "synthetic_bdedepth"],
    "manydepth": ["--config", "synthetic_manydepth"],
    "mism_teacher": ["--config", "synthetic_mism_teacher"],
    "mism_student": ["--config", "synthetic_mism_student"],
    "dynamic_mf": ["--config", "synthetic_dynamic_mf"],
}
DEFAULT = ("monodepth2_mono", "manydepth")  # one single-frame method and a multi-frame one (dynamic_mf: slow)
# inference options that change what predict reads: (folder, overrides)
VARIANTS = [("manydepth", {"eval_teacher": True}), ("manydepth", {"keep_missing_pose": True}),
            ("mism_student", {"single_frame": True})]
# MISM's MNet takes the argmax over its 16 depth hypotheses before the local soft-argmax: where
# two are equal to float rounding, ONNX Runtime's kernels may pick the other one (measured on
# random inputs: 0 pixels on 3 of 4 draws, 144 of 36864 (0.4 %) on one, up to 3.6 % apart)
FLIP_FRACTION = {"mism_teacher": 0.02, "mism_student": 0.02}
TOLERANCE = 1e-4  # absolute and relative, on depth and disp (measured: < 2e-5 absolute, < 5e-7 relative)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """folder(name) -> the weight folder of FOLDERS[name], written on first use."""
    root = tmp_path_factory.mktemp("export_folders")
    made = {}

    def get(name):
        if name not in made:
            extra = FOLDERS[name]
            if name == "mism_student":
                extra = extra + ["--teacher_weights_folder", get("mism_teacher")]
            opt = MonodepthOptions().parse([*extra, "--height", "64", "--width", "96"])
            torch.manual_seed(0)
            path = str(root / name)
            build_method(opt).save_weights(path, {"height": opt.height, "width": opt.width,
                                                  "use_stereo": opt.use_stereo})
            with open(os.path.join(path, "opt.json"), "wb") as f:
                f.write(options_json(opt))
            made[name] = path
        return made[name]

    return get


def _param(name, *rest):
    marks = () if name in DEFAULT else (pytest.mark.slow,)
    return pytest.param(name, *rest, marks=marks, id="-".join([name, *map(str, rest)]))


@pytest.fixture(scope="module")
def exported(folder, tmp_path_factory):
    """exported(name, fmt) -> (method, path, description) of FOLDERS[name] exported once."""
    root = tmp_path_factory.mktemp("exported")
    made = {}

    def get(name, fmt):
        if (name, fmt) not in made:
            method = load_for_inference(folder(name))
            path = str(root / f"{name}.{'onnx' if fmt == 'onnx' else 'pt'}")
            made[name, fmt] = method, path, export_model.export(method, fmt, path)
        return made[name, fmt]

    return get


class Recording(dict):
    """A batch that records which entries' values are read (d[key], d.get(key)); a
    membership test alone (key in d) reads nothing."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def _full_batch(opt, b=2):
    """Everything any method could read: frames -1, 0, +1 at four scales, K / inv_K at four
    scales, poses ("T", f), missing flags, the stereo pose."""
    from tests.helpers.batch import fake_batch
    opt = type(opt)(**{**vars(opt), "frame_ids": [0, -1, 1]})
    batch = fake_batch(opt, b)
    for f in (-1, 1):
        batch[("T", f)] = torch.eye(4)[None].repeat(b, 1, 1)
        batch[("missing", f)] = torch.zeros(b)
    return batch


@pytest.mark.parametrize("name,overrides", [pytest.param(n, o, id="-".join([n, *o]),
                                                       marks=() if n in DEFAULT else (pytest.mark.slow,))
                                          for n, o in [(n, {}) for n in FOLDERS] + VARIANTS])
def test_declared_inputs_are_what_predict_reads(folder, name, overrides):
    """export_inputs() lists exactly the entries predict() reads from a batch that holds
    everything, in their shapes."""
    method = load_for_inference(folder(name), **overrides)
    method.predict_variants = False
    batch = Recording(_full_batch(method.opt))
    with torch.no_grad():
        method.predict(batch)
    declared = dict(method.export_inputs())
    assert set(declared) == batch.read
    for key, shape in declared.items():
        assert tuple(batch[key].shape[1:]) == tuple(shape[1:]) and shape[0] == "B", key


@pytest.mark.parametrize("name,fmt", [_param(n, f) for n in FOLDERS for f in ("onnx", "torchscript")])
def test_exported_model_equals_eager_at_two_batch_sizes(exported, name, fmt):
    """The exported file (ONNX in onnxruntime, TorchScript in torch) gives the eager depth
    and disparity within 1e-4 at batch 1 and 3 (traced at 2: the batch is dynamic)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime: pip install -r requirements.txt")
    method, path, info = exported(name, fmt)
    model = export_model.ExportedModel(path)
    assert model.names == [x["name"] for x in info["inputs"]]
    graph = export_model.PredictGraph(method).eval()
    allowed = FLIP_FRACTION.get(name, 0.0) if fmt == "onnx" else 0.0
    for b in (1, 3):
        x = export_model.example_inputs(method, b, seed=b)
        with torch.no_grad():
            eager = graph(*x)
        got = model(*x)
        for g, e in zip(got, eager):
            assert g.shape == e.shape == (b, 1, method.opt.height, method.opt.width)
            off = ((g - e).abs() > TOLERANCE * torch.maximum(e.abs(), torch.ones_like(e))).float().mean()
            assert float(off) <= allowed, (b, float((g - e).abs().max()))


def test_manydepth_missing_frame_flag_is_an_input_of_the_exported_model(exported):
    """ManyDepth's missing_-1 input zeroes the pose of a flagged sample, as predict does
    with ("missing", -1): the exported model follows the eager one with the flag set and
    unset, and the flag changes only the flagged sample."""
    pytest.importorskip("onnxruntime")
    method, path, info = exported("manydepth", "onnx")
    assert [x["name"] for x in info["inputs"]] == ["color_0_0", "color_-1_0", "K_2", "inv_K_2", "missing_-1"]
    model = export_model.ExportedModel(path)
    graph = export_model.PredictGraph(method).eval()
    x = export_model.example_inputs(method, 2)[:4]
    depths = {}
    for flags in ((1.0, 0.0), (0.0, 0.0)):
        with torch.no_grad():
            eager = graph(*x, torch.tensor(flags))[0]
        got = model(*x, torch.tensor(flags))[0]
        # measured: < 1e-7 apart (depth ~0.2); the flag moves sample 0 by ~1e-5 (random weights)
        assert float((got - eager).abs().max()) < 1e-6
        depths[flags] = got
    assert float((depths[1.0, 0.0][0] - depths[0.0, 0.0][0]).abs().max()) > 1e-6
    assert float((depths[1.0, 0.0][1] - depths[0.0, 0.0][1]).abs().max()) < 1e-6


def test_command_line_writes_a_described_onnx_at_another_size(folder, tmp_path, capsys):
    """export_model.py at --height 96 --width 160 from a 64 x 96 folder: the ONNX file names
    its inputs and outputs, carries the description, and the script prints the check."""
    pytest.importorskip("onnxruntime")
    import onnx
    out = tmp_path / "mono.onnx"
    info = export_model.main(["--load_weights_folder", folder("monodepth2_mono"), "--format", "onnx",
                              "--height", "96", "--width", "160", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "batch 1: max |exported - eager|" in printed and "batch 3:" in printed
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["color_0_0"]
    assert [o.name for o in model.graph.output] == ["depth", "disp"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 96, 160]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["depthkit"])
    assert meta["method"] == "monodepth2"
    assert (meta["height"], meta["width"]) == (96, 160) == (info["height"], info["width"])
    assert meta["inputs"] == [{"name": "color_0_0", "key": ["color", 0, 0], "shape": ["B", 3, 96, 160]}]


def test_bad_size_and_folder_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit) as e:
        export_model.parse_args(["--load_weights_folder", str(tmp_path), "--format", "onnx", "--out", "x.onnx",
                                 "--height", "100"])
    assert e.value.code == 2
    with pytest.raises(SystemExit, match="no such folder"):
        export_model.main(["--load_weights_folder", str(tmp_path / "none"), "--format", "onnx", "--out", "x.onnx"])


def test_operator_onnx_lacks_is_a_named_error(folder, tmp_path, monkeypatch):
    """A predict that uses an operator without an ONNX form (here torch.linalg.inv) is
    refused with the method, the operator and what to do; TorchScript still exports it."""
    method = load_for_inference(folder("monodepth2_mono"))
    original = method.predict

    def predict(inputs):
        out = original(inputs)
        scale = torch.linalg.inv(torch.eye(2).expand(out["depth"].shape[0], 2, 2))[:, :1, :1, None]
        return {"depth": out["depth"] * scale, "disp": out["disp"] / scale}

    monkeypatch.setattr(method, "predict", predict)
    with pytest.raises(SystemExit) as e:
        export_model.export(method, "onnx", str(tmp_path / "m.onnx"))
    message = str(e.value)
    assert "Monodepth2 (--method monodepth2)" in message and "aten::linalg_inv" in message
    assert "--format torchscript" in message and "\n" not in message
    export_model.export(method, "torchscript", str(tmp_path / "m.pt"))
    assert os.path.getsize(tmp_path / "m.pt") > 0


def _assert_equals_eager(method, path, batches=(1, 3)):
    """The exported file gives the eager depth and disp within TOLERANCE (relative where
    |value| > 1) at each batch size."""
    model = export_model.ExportedModel(path)
    graph = export_model.PredictGraph(method).eval()
    for b in batches:
        x = export_model.example_inputs(method, b, seed=b)
        with torch.no_grad():
            eager = graph(*x)
        got = model(*x)
        for g, e in zip(got, eager):
            assert g.shape == e.shape, (b, g.shape, e.shape)
            assert bool(((g - e).abs() <= TOLERANCE * torch.maximum(e.abs(), torch.ones_like(e))).all()), \
                (b, float((g - e).abs().max()))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_manydepth_chunked_cost_volume_exports_at_any_batch(folder, tmp_path, fmt):
    """ManyDepth builds its cost volume in chunks of bins sized by batch x size (at 640 x 192
    two chunks at the traced batch of 2): with the chunk limit lowered so that eager uses 3
    chunks at the traced batch, 2 at batch 1 and 5 at batch 3 (of 96 bins, 64 x 96), the
    exported graph (built in one piece) still gives eager's outputs at batch 1 and 3. A trace
    of the chunk loop kept its number of chunks but sized them from the batch (failed to
    run: 'invalid expand shape')."""
    pytest.importorskip("onnxruntime")
    method = load_for_inference(folder("manydepth"))
    encoder = method.models["encoder"]
    bins = len(encoder.bins())
    c, h, w = 64, method.opt.height // 4, method.opt.width // 4  # layer-1 features at 1/4 size
    encoder.max_chunk_elements = export_model.TRACE_BATCH * c * h * w * (bins // 3 + 1)  # 33 bins a chunk at batch 2
    path = str(tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt"))
    export_model.export(method, fmt, path)
    _assert_equals_eager(method, path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_dynamic_mf_chunked_cost_volume_exports_at_any_batch(folder, tmp_path, monkeypatch, fmt):
    """dynamic_mf's cost volume has the same chunking (networks/dynamic_mf.py
    MAX_CHUNK_ELEMENTS): lowered so that eager builds its 32 depth planes in chunks of 11 at
    batch 2, 22 at batch 1 and 7 at batch 3 (64 x 96), the exported graph gives eager's depth
    at batch 1 and 3. A trace of the chunk loop left the planes past the first batch-sized
    chunk unwritten (1.7e-3 relative apart at 64 x 192, batch 3)."""
    pytest.importorskip("onnxruntime")
    import networks.dynamic_mf as dynamic_mf
    method = load_for_inference(folder("dynamic_mf"))
    monkeypatch.setattr(dynamic_mf, "MAX_CHUNK_ELEMENTS",
                        export_model.TRACE_BATCH * 4 * method.opt.height * method.opt.width * 11)
    path = str(tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt"))
    export_model.export(method, fmt, path)
    _assert_equals_eager(method, path)

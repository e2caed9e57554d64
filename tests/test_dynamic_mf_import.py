"""Released checkpoints of the dynamic-scene method (its reference implementation's
DyMultiDepthModel) imported into a `--method dynamic_mf` weight folder: the key map against
the reference's recorded key names and shapes (tests/data/dynamic_mf_reference_keys.json),
a round trip through import_reference_weights.py and the inference loader with bit-identical
predictions, and the errors that name the file and the key."""
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from methods import build_method, load_for_inference
from methods.dynamic_mf import (OURS_ONLY, _model_shapes, detect_reference_layout, import_reference_checkpoint,
                                reference_key_to_ours, reference_state_to_ours)
from options import MonodepthOptions
from tests.helpers.cli import ROOT

KEYS = os.path.join(os.path.dirname(__file__), "data", "dynamic_mf_reference_keys.json")


@pytest.fixture(scope="module")
def reference_keys():
    with open(KEYS) as f:
        return json.load(f)


def _reference_names(ref_keys, backbone, fusion="ccf"):
    """Our key -> the reference's, by inverting reference_key_to_ours over the recorded keys;
    the map must be one to one onto all of our keys but OURS_ONLY."""
    names = {reference_key_to_ours(k, backbone): k for k in ref_keys}
    assert None not in names, [k for k in ref_keys if reference_key_to_ours(k, backbone) is None][:5]
    assert len(names) == len(ref_keys)
    ours = _model_shapes(backbone, fusion, 256, 512)
    assert set(names) == set(ours) - set(OURS_ONLY[backbone])
    return names


def _ablation_keys(reference_keys, fusion):
    keys = {k: v for k, v in reference_keys["resnet18"].items() if not k.startswith("fusion_module.")}
    keys.update(reference_keys["ablations"][fusion])
    return keys


def _inputs(b=1, h=64, w=128):
    torch.manual_seed(1)
    inputs = {("color", f, 0): torch.rand(b, 3, h, w) for f in (0, -1, 1)}
    K = torch.tensor([[0.58 * w, 0, 0.5 * w, 0], [0, 1.92 * h, 0.5 * h, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    inputs[("K", 0)], inputs[("inv_K", 0)] = K.repeat(b, 1, 1), torch.linalg.inv(K).repeat(b, 1, 1)
    for f in (-1, 1):
        T = torch.eye(4).repeat(b, 1, 1)
        T[:, 2, 3], T[:, 0, 3] = -0.8 * f, 0.1 * f
        inputs[("T", f)] = T
    return inputs


def _save_with_foreign_object(obj, path):
    """torch.save `obj` with a "config" entry of a class that no loader can import (as the
    reference's checkpoints pickle its ConfigParser)."""
    module = types.ModuleType("reference_only_config")
    config_cls = type("ConfigParser", (), {"__module__": module.__name__})
    module.ConfigParser = config_cls
    config = config_cls()
    config.__dict__.update(_config={"arch": {"type": "DyMultiDepthModel"}}, resume=None)
    sys.modules[module.__name__] = module
    try:
        torch.save(dict(obj, config=config), path)
    finally:
        del sys.modules[module.__name__]


@pytest.fixture(scope="module")
def resnet18_model():
    """Our ResNet-18 model at random init (non-trivial BatchNorm statistics and CCF gain),
    with the reference behaviours, in eval mode."""
    torch.manual_seed(0)
    method = build_method(MonodepthOptions().parse(["--method", "dynamic_mf", "--weights_init", "scratch",
                                                    "--ref_compat"])).eval()
    with torch.no_grad():
        for m in method.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        method.models["model"].fusion.gamma.fill_(0.7)
    return method


@pytest.fixture(scope="module")
def fake_checkpoints(resnet18_model, reference_keys, tmp_path_factory):
    """Our weights under the reference's names: {"state_dict", "arch"} and, as DataParallel
    saved it, `module.` prefixes with a pickled config object."""
    state = resnet18_model.models["model"].state_dict()
    names = _reference_names(reference_keys["resnet18"], "resnet18")
    ref_state = {names[k]: v for k, v in state.items()}
    tmp = tmp_path_factory.mktemp("ckpt")
    plain, parallel = str(tmp / "plain.pth"), str(tmp / "mr_kitti_resnet18.pth")
    torch.save({"state_dict": ref_state, "arch": "DyMultiDepthModel"}, plain)
    _save_with_foreign_object({"state_dict": {"module." + k: v for k, v in ref_state.items()}, "arch": "DataParallel",
                               "epoch": 80}, parallel)
    return ref_state, plain, parallel


def test_resnet18_keys_and_shapes_are_the_references(fake_checkpoints, reference_keys):
    ref_state, _, _ = fake_checkpoints
    assert {k: list(v.shape) for k, v in ref_state.items()} == reference_keys["resnet18"]
    assert len(ref_state) == 324
    assert detect_reference_layout(ref_state) == ("resnet18", "ccf", 2)


@pytest.mark.parametrize("how", ["command", "function"])
def test_import_loads_and_predicts_bit_identically(how, resnet18_model, fake_checkpoints, tmp_path):
    _, plain, parallel = fake_checkpoints
    out = tmp_path / "imported"
    if how == "command":  # DataParallel keys, a config object no loader can import
        res = subprocess.run([sys.executable, "import_reference_weights.py", parallel, "--backbone", "resnet18",
                              "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert res.returncode == 0, res.stderr[-3000:]
        assert "backbone resnet18, fusion ccf" in res.stdout
    else:
        import_reference_checkpoint(plain, str(out))
    assert sorted(os.listdir(out)) == ["model.pth", "opt.json"]
    saved = json.loads((out / "opt.json").read_text())
    assert (saved["method"], saved["backbone"], saved["fusion"], saved["height"], saved["width"]) == \
        ("dynamic_mf", "resnet18", "ccf", 256, 512)
    assert saved["reference_align_corners"] and saved["imagenet_stats"] and saved["ref_compat"]
    loaded = load_for_inference(str(out))
    assert loaded.models["model"].align_corners is False
    original = resnet18_model.models["model"].state_dict()
    for k, v in loaded.models["model"].state_dict().items():
        assert torch.equal(v, original[k]), k
    inputs = _inputs()
    with torch.no_grad():
        a, b = resnet18_model.predict(inputs), loaded.predict(inputs)
    assert torch.equal(a["depth"], b["depth"]) and torch.equal(a["variants"]["mono"], b["variants"]["mono"])


def test_effnet_b5_keys_and_shapes_map_one_to_one(reference_keys):
    """All 1,054 reference keys of the EfficientNet-B5 model map onto ours with their shapes;
    ours has timm's classifier besides (unused; the reference replaced it), written as zeros."""
    ref = reference_keys["effnet_b5"]
    assert len(ref) == 1054
    names = _reference_names(ref, "effnet_b5")
    shapes = _model_shapes("effnet_b5", "ccf", 256, 512)
    assert all(list(shapes[ours]) == ref[theirs] for ours, theirs in names.items())
    state = {k: torch.empty(v, device="meta") for k, v in ref.items()}
    assert detect_reference_layout(state) == ("effnet_b5", "ccf", 2)
    ours = reference_state_to_ours(state, "effnet_b5")
    assert list(ours) == list(shapes)
    assert all(not ours[k].any() for k in OURS_ONLY["effnet_b5"])


@pytest.mark.parametrize("fusion", ["mono_guide_multi", "multi_guide_mono"])
def test_one_way_fusions_map_too(fusion, reference_keys):
    ref = _ablation_keys(reference_keys, fusion)
    state = {k: torch.empty(v, device="meta") for k, v in ref.items()}
    assert detect_reference_layout(state) == ("resnet18", fusion, 2)
    ours = reference_state_to_ours(state, "resnet18", fusion)
    assert list(ours) == list(_model_shapes("resnet18", fusion, 256, 512))


def test_errors_name_the_file_and_the_key(fake_checkpoints, tmp_path):
    ref_state, plain, _ = fake_checkpoints
    out = str(tmp_path / "out")

    def fails(state, match, backbone=None, extra=None, name="bad.pth"):
        path = str(tmp_path / name)
        torch.save(extra if extra is not None else {"state_dict": state, "arch": "DyMultiDepthModel"}, path)
        with pytest.raises(SystemExit, match=match) as e:
            import_reference_checkpoint(path, out, backbone)
        assert path in str(e.value)
        return str(e.value)

    missing = {k: v for k, v in ref_state.items() if k != "depth_module.predictors.3.1.bias"}
    fails(missing, r"our key depth_module\.heads\.3\.bias \(shape \[1\]\) has no reference key")
    fails(dict(ref_state, **{"depth_module.extra.weight": torch.zeros(1)}),
          r"reference key depth_module\.extra\.weight has no counterpart")
    fails(dict(ref_state, **{"mono_module.predictors.0.1.weight": torch.zeros(1, 255, 3, 3)}),
          r"reference key mono_module\.predictors\.0\.1\.weight has shape \[1, 255, 3, 3\], "
          r"our mono_module\.heads\.0\.weight \[1, 256, 3, 3\]")
    fails(ref_state, "its backbone is resnet18.*not --backbone effnet_b5", backbone="effnet_b5")
    fails({k: v for k, v in ref_state.items() if not k.startswith("fusion_module.lin_multi")},
          r"projections \['lin_mono_k', 'lin_mono_q', 'lin_mono_v'\]")
    fails(None, r'no "state_dict" entry', extra={"model": {}})
    fails({k: v for k, v in ref_state.items() if not k.startswith("_feature_extractor.")}, "no backbone keys")
    with pytest.raises(SystemExit, match="nope.pth: no such checkpoint file"):
        import_reference_checkpoint(str(tmp_path / "nope.pth"), out)
    assert not os.path.exists(out)

"""One file per paper. `build_method(opt)` returns the nn.Module the Trainer drives."""
import importlib


def build_method(opt):
    name = getattr(opt, "method", "monodepth2")
    if getattr(opt, "use_depth_hints", False) and name == "monodepth2":
        name = "depth_hints"
    try:
        module = importlib.import_module(f"methods.{name}")
    except ModuleNotFoundError as e:
        raise SystemExit(f"--method {name!r}: no file methods/{name}.py ({e})") from None
    return module.METHOD(opt)

"""Networks: plain nn.Modules with their tensor shapes in their docstrings, found by name
through the registries of `registry.py` (encoders, depth decoders, pose networks).

Adding a network: write the module here, register a factory `f(opt, ...)` with the family's
decorator, and list the module in MODULES; methods then select it with an option (--encoder,
--depth_decoder, --pose_model_type). timm backbones need no registration (--encoder <timm
name>). The modules are imported when a network is first built or named (importing this
package is cheap: `--help` and option parsing do not load torchvision or timm).
"""
import importlib

from .registry import (DEPTH_DECODERS, ENCODERS, POSE_NETWORKS, build_depth_decoder, build_encoder,  # noqa: F401
                       build_pose_networks, load_network_modules, register_depth_decoder, register_encoder,
                       register_pose_network, start_weights_file)

# names other code imports from this package -> the module that defines them
_EXPORTS = {"DepthDecoder": "depth_decoder", "PoseCNN": "pose_decoder", "PoseDecoder": "pose_decoder",
            "ResnetEncoder": "resnet_encoder", "load_imagenet_state_dict": "resnet_encoder",
            "TimmEncoder": "timm_encoder"}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

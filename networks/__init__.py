"""Networks: plain nn.Modules with their tensor shapes in their docstrings, found by name
through the registries of `registry.py` (encoders, depth decoders, pose networks).

Adding a network: write the module here and register a factory `f(opt, ...)` with the
family's decorator; methods then select it with an option (--encoder, --depth_decoder,
--pose_model_type). timm backbones need no registration (--encoder <timm name>).
"""
from .depth_decoder import DepthDecoder  # noqa: F401  (importing the modules registers them)
from . import srd_decoder  # noqa: F401
from . import bdedepth_encoders, grid_decoder  # noqa: F401
from . import dynamic_mf, manydepth, mism, msf_decoder  # noqa: F401
from .pose_decoder import PoseCNN, PoseDecoder  # noqa: F401
from .registry import (DEPTH_DECODERS, ENCODERS, POSE_NETWORKS, build_depth_decoder, build_encoder,  # noqa: F401
                       build_pose_networks, register_depth_decoder, register_encoder, register_pose_network,
                       start_weights_file)
from .resnet_encoder import ResnetEncoder, load_imagenet_state_dict  # noqa: F401
from .timm_encoder import TimmEncoder  # noqa: F401


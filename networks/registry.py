"""Registries of networks by family, filled by decorators: encoders, depth decoders, pose
networks. A method asks for a network by name (an option such as --encoder), never by class,
so a new backbone or decoder is one decorated factory and no method changes.

    @register_encoder("resnet")
    def resnet(opt, num_input_images=1): ...   # -> nn.Module with .num_ch_enc

Encoders not registered here are looked up in timm by name (`--encoder convnext_tiny` or
`--encoder timm:convnext_tiny`), with the channels read from the model's feature_info.
"""
import importlib
import os

# the modules whose decorators fill the registries (imported on first use, all together)
MODULES = ("depth_decoder", "srd_decoder", "bdedepth_encoders", "grid_decoder", "dynamic_mf", "manydepth", "mism",
           "msf_decoder", "pose_decoder", "resnet_encoder", "timm_encoder")
_loaded = False


def load_network_modules():
    """Import every network module of the package (their factories register themselves)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in MODULES:
            importlib.import_module(f"networks.{module}")

ENCODERS = {}
DEPTH_DECODERS = {}
POSE_NETWORKS = {}


def _register(table, family):
    def register(name):
        def decorate(factory):
            if name in table:
                raise ValueError(f"{family} {name!r} is registered twice")
            table[name] = factory
            return factory
        return decorate
    return register


register_encoder = _register(ENCODERS, "encoder")
register_depth_decoder = _register(DEPTH_DECODERS, "depth decoder")
register_pose_network = _register(POSE_NETWORKS, "pose network")


def start_weights_file(opt, family):
    """The file an encoder of `family` (resnet18, resnet50, hrnet_w18, a timm name) starts from
    under --weights_init pretrained: FOLDER/<family>.pth when --pretrained_encoder FOLDER is
    given (a shared start other than ImageNet, such as the one benchmarks/pretrain_encoder.py
    writes), else --imagenet_weights; None lets the encoder fetch ImageNet weights itself."""
    folder = getattr(opt, "pretrained_encoder", None)
    if not folder:
        return getattr(opt, "imagenet_weights", None)
    path = os.path.join(os.path.expanduser(folder), f"{family}.pth")
    if not os.path.isfile(path):
        held = sorted(f for f in os.listdir(os.path.expanduser(folder)) if f.endswith(".pth"))
        raise SystemExit(f"--pretrained_encoder {folder}: no {family}.pth for this run's encoders (it holds "
                         f"{', '.join(held) or 'no .pth file'}); write one with benchmarks/pretrain_encoder.py "
                         f"--encoders {family}, or drop --pretrained_encoder")
    return path


def build_encoder(opt, name=None, num_input_images=1):
    """Encoder `name` (default --encoder): a registered factory, or a timm backbone by name.
    Output: a list of features from fine to coarse; `num_ch_enc` lists their channels."""
    load_network_modules()
    name = name or getattr(opt, "encoder", "resnet")
    if name in ENCODERS:
        return ENCODERS[name](opt, num_input_images=num_input_images)
    from .timm_encoder import TimmEncoder, timm_has_model
    timm_name = name[len("timm:"):] if name.startswith("timm:") else name
    if timm_has_model(timm_name):
        if num_input_images != 1:
            raise SystemExit(f"--encoder {name}: timm backbones take one image (use a ResNet pose encoder)")
        return TimmEncoder(timm_name, opt.weights_init == "pretrained", (opt.height, opt.width),
                           weights_file=start_weights_file(opt, timm_name) if opt.weights_init == "pretrained" else None)
    raise SystemExit(f"--encoder {name!r}: not a registered encoder ({', '.join(sorted(ENCODERS))}) "
                     "nor a timm model name (see timm.list_models())")


def build_depth_decoder(opt, num_ch_enc, name=None, num_output_channels=1):
    load_network_modules()
    name = name or getattr(opt, "depth_decoder", "monodepth2")
    if name not in DEPTH_DECODERS:
        raise SystemExit(f"--depth_decoder {name!r}: registered decoders are {', '.join(sorted(DEPTH_DECODERS))}")
    return DEPTH_DECODERS[name](opt, num_ch_enc, num_output_channels=num_output_channels)


def build_pose_networks(opt, depth_encoder_channels, num_pose_frames, name=None):
    """A dict of pose networks keyed by their weight-file names (pose_encoder, pose)."""
    load_network_modules()
    name = name or opt.pose_model_type
    if name not in POSE_NETWORKS:
        raise SystemExit(f"--pose_model_type {name!r}: registered pose networks are "
                         f"{', '.join(sorted(POSE_NETWORKS))}")
    return POSE_NETWORKS[name](opt, depth_encoder_channels, num_pose_frames)

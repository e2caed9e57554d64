"""Networks and the factories that build them from options."""
from .depth_decoder import DepthDecoder
from .pose_decoder import PoseCNN, PoseDecoder
from .resnet_encoder import ResnetEncoder, load_imagenet_state_dict


def build_depth_encoder(opt):
    return ResnetEncoder(opt.num_layers, opt.weights_init == "pretrained",
                         weights_file=getattr(opt, "imagenet_weights", None))


def build_depth_decoder(opt, num_ch_enc, num_output_channels=1):
    decoder = DepthDecoder(num_ch_enc, opt.scales, num_output_channels)
    bias = getattr(opt, "disp_bias_init", None)
    if bias is not None and num_output_channels == 1:
        decoder.init_disparity_bias(bias)
    return decoder


def build_pose_networks(opt, depth_encoder_channels, num_pose_frames):
    """Returns a dict of pose networks by monodepth2 file name."""
    if opt.pose_model_type == "separate_resnet":
        enc = ResnetEncoder(opt.num_layers, opt.weights_init == "pretrained", num_input_images=num_pose_frames,
                            weights_file=getattr(opt, "imagenet_weights", None))
        return {"pose_encoder": enc, "pose": PoseDecoder(enc.num_ch_enc, 1, 2)}
    if opt.pose_model_type == "shared":
        return {"pose": PoseDecoder(depth_encoder_channels, num_pose_frames)}
    if opt.pose_model_type == "posecnn":
        return {"pose": PoseCNN(num_pose_frames)}
    raise ValueError(f"--pose_model_type {opt.pose_model_type!r}: use separate_resnet, shared or posecnn")

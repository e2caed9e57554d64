"""What every method gives the Trainer, the evaluation and the prediction scripts.

A method (one file in methods/, registered with `@register_method("name")`):
- declares its own command-line options (`add_options`, this class's options only: the
  option builder walks the class hierarchy; a built-in class's add_options calls its function
  in methods/option_groups.py, which imports no PyTorch, so --help stays fast) and checks
  them (`check_options`);
- builds its networks into `self.models`, an nn.ModuleDict whose keys are the weight-file
  names (encoder -> encoder.pth), and says which of them inference needs
  (`inference_models`) and which frames `predict` reads (`inference_frames`);
- declares extra per-item targets the datasets must load (`item_targets`, e.g. Depth
  Hints' precomputed hints) and the training items' augmentations (`item_augmentations`);
- gives its parameter groups, each with its own learning rate (`param_groups`);
- turns a batch into outputs (`forward`) and returns its loss as named terms
  (`compute_losses`), which the Trainer sums and logs by name;
- has hooks at epoch start and end and after each training step (`on_epoch_start`,
  `on_epoch_end`, `on_train_step_end`);
- keeps state that is not weights (a teacher snapshot, running trackers) in
  `extra_state` / `load_extra_state`, saved in the resume state;
- predicts depth for validation, evaluation and prediction (`predict`), and lists the batch
  entries predict reads (`export_inputs`: the inputs of an exported model).
"""
import json
import os

import torch
import torch.nn as nn

from utils import atomic_torch_save

ENCODER_INFO_KEYS = ("height", "width", "use_stereo")  # non-tensor entries of encoder.pth


class Method(nn.Module):
    name = None  # set by register_method
    selector = None
    inference_frames = (0,)  # frame ids predict() reads: ("color", f, 0) for f in these
    inference_models = ("encoder", "depth")  # weight files predict() needs
    depth_scale = None  # validation scaling: None = per-image median; a number = fixed factor
    find_unused_parameters = False  # DDP: True when some networks skip steps (e.g. frozen phases)
    # options evaluate_depth.py accepts for this method (e.g. ManyDepth's --eval_teacher); they
    # override the weight folder's options at inference
    inference_options = ()
    # weight files that only this method's folders hold: a folder whose opt.json names no
    # method (the reference implementations' own folders) is loaded as the method they fit
    weight_signature = ()
    predict_variants = True  # False while the Trainer validates (see predict)
    post_process_supported = True  # evaluate_depth.py --post_process (a mirrored pass) is meaningful

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.models = nn.ModuleDict()

    # --- options
    @classmethod
    def add_options(cls, parser):
        """Add this class's own options (an argument group). Base classes add theirs."""

    @classmethod
    def check_options(cls, opt):
        """Reject option combinations this method cannot run, with a message naming them (each
        class checks its own options; the base classes' checks run first)."""

    # --- data
    @classmethod
    def item_targets(cls, opt):
        """Extra image-aligned targets each item must carry (datasets.mono_dataset.ItemTarget);
        a class method, so that the data is checked before any network is built."""
        return []

    @classmethod
    def missing_frames(cls, opt, training):
        """What a neighbour frame beyond the start or end of a sequence becomes in training
        (training=True) or in validation / evaluation items: "error", "duplicate" (the
        target frame) or "black"; the item then flags it as ("missing", f). The prediction
        scripts apply it with missing_frame_batch (below)."""
        return "error"

    @classmethod
    def dataset_options(cls, opt):
        """Keyword arguments for the dataset class (e.g. which pose files an odometry dataset
        reads); {} for the datasets' defaults."""
        return {}

    @classmethod
    def item_augmentations(cls, opt):
        """The training items' augmentations (datasets.augment), or None for monodepth2's
        colour jitter and flip."""
        return None

    # --- training
    def parameters_to_train(self):
        return [p for p in self.models.parameters() if p.requires_grad]

    def param_groups(self):
        """Optimiser parameter groups: dicts with "name", "params" and "lr" (the LR before any
        schedule). The schedule multiplies every group's LR by the same factor."""
        return [{"name": "all", "params": self.parameters_to_train(), "lr": self.opt.learning_rate}]

    def forward(self, inputs):
        raise NotImplementedError

    def compute_losses(self, inputs, outputs):
        """-> (terms: name -> scalar tensor, summed by the Trainer; logs: name -> scalar)."""
        raise NotImplementedError

    def on_epoch_start(self, epoch, start_batch):
        """Before the first batch of an epoch; start_batch > 0 when a resumed run continues
        inside the epoch (extra_state has been restored then)."""

    def on_train_step_end(self, step, inputs, outputs):
        """After each optimiser step of training (never on validation batches)."""

    def on_epoch_end(self, epoch):
        """After the last batch of an epoch, before validation and saving."""

    # --- the optimiser and its schedule (the Trainer owns both)
    reset_optimizer_state = False  # set True to have the Trainer drop Adam's moments once

    def schedule_epoch(self, epoch):
        """The epoch the step / exponential LR schedules read at training epoch `epoch` (a
        method that restarts its schedule part-way, as a reference re-creating its
        scheduler did, maps it here; a pure function of the epoch, so resuming agrees)."""
        return epoch

    def images_to_log(self, inputs, outputs, n):
        return {}

    def train_depth(self, outputs):
        """Depth at scale 0 from training outputs (B x 1 x H x W), for the logged metrics."""
        return outputs.get(("depth", 0, 0))

    # --- state that is not weights
    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        pass

    # --- inference
    def predict(self, inputs):
        """inputs: ("color", f, 0) B x 3 x H x W in [0, 1] for f in inference_frames (plus
        ("K", s) / ("inv_K", s) where a method needs them) -> {"depth": B x 1 x H x W,
        "disp": 1 / depth, ...}. Depth is in the method's training units. A method with
        more than one output worth scoring (a multi-frame network and its single-frame
        network) adds "variants": {name: B x 1 x H x W depth}; evaluate_depth.py scores each
        in its own table. The Trainer's validation reads "depth" alone and sets
        `predict_variants` False meanwhile: a variant that costs a forward pass of its own
        may be skipped then."""
        raise NotImplementedError

    # --- export (export_model.py, benchmarks/inference_speed.py)
    inference_intrinsics = ()  # scales s of the ("K", s) and ("inv_K", s) that predict() reads

    def export_inputs(self):
        """The batch entries predict() reads, in the order an exported model takes them as
        positional tensors: [(key, shape)], "B" in a shape standing for the batch size.
        Default: ("color", f, 0) B x 3 x H x W in [0, 1] for f in inference_frames, then
        ("K", s) and ("inv_K", s) B x 4 x 4 (pixels at scale s) for s in
        inference_intrinsics. A method that reads more (poses from files, missing-frame
        flags) adds them here."""
        h, w = self.opt.height, self.opt.width
        entries = [(("color", f, 0), ("B", 3, h, w)) for f in self.inference_frames]
        for s in self.inference_intrinsics:
            entries += [(("K", s), ("B", 4, 4)), (("inv_K", s), ("B", 4, 4))]
        return entries

    def prediction_dataset(self, path):
        """test_simple.py --image_path `path`: a dataset whose items carry everything predict()
        reads (e.g. poses from files) and a "path" per item, for methods that cannot predict
        from bare images; None: the images are read as they are (the default)."""
        return None

    # --- weights in monodepth2's folder format
    def save_weights(self, folder, encoder_info):
        """One <name>.pth per network; encoder.pth also holds encoder_info (height, ...)."""
        os.makedirs(folder, exist_ok=True)
        for name, model in self.models.items():
            state = model.state_dict()
            if name == "encoder":
                state.update(encoder_info)
            atomic_torch_save(state, os.path.join(folder, f"{name}.pth"))

    def load_weights(self, folder, names, strict=False):
        """Load `names` from a monodepth2-style folder. strict=False (fine-tuning from another
        recipe): matching keys only, a missing file or key is reported, not fatal.
        strict=True (inference): every file must exist and match its network exactly."""
        if not os.path.isdir(folder):
            raise SystemExit(f"--load_weights_folder {folder}: no such folder")
        loaded = []
        for name in names:
            if name not in self.models:
                continue
            path = os.path.join(folder, f"{name}.pth")
            if not os.path.isfile(path):
                if strict:
                    raise SystemExit(f"--load_weights_folder {folder}: missing {name}.pth "
                                     f"({type(self).__name__} needs {', '.join(self.inference_models)})")
                print(f"-> {path} not found: {name} keeps its initial weights")
                continue
            state = self.adapt_weight_file(name, load_state_file(path), path)
            model_state = self.models[name].state_dict()
            if strict:
                missing = [k for k in model_state if k not in state]
                unexpected = [k for k in state if k not in model_state]
                wrong = [k for k in model_state if k in state and state[k].shape != model_state[k].shape]
                if missing or unexpected or wrong:
                    raise SystemExit(f"{path} does not fit {type(self).__name__}'s {name} network: "
                                     f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                                     f"(e.g. {unexpected[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]}); "
                                     "is the folder's opt.json the one it was trained with?")
                self.models[name].load_state_dict(state)
            else:
                matched = {k: v for k, v in state.items() if k in model_state and v.shape == model_state[k].shape}
                skipped = [k for k in model_state if k not in matched]
                if skipped:
                    print(f"-> {path}: {len(skipped)} parameters not loaded (e.g. {skipped[:3]})")
                model_state.update(matched)
                self.models[name].load_state_dict(model_state)
            loaded.append(name)
        return loaded

    def adapt_weight_file(self, name, state, path):
        """A weight file's state dict before loading into models[name]: a method adapts the
        reference implementation's layout here (extra entries, name prefixes). Here: a
        network with an `upgrade_state_dict` (one whose layout changed) reads its older files
        through it."""
        upgrade = getattr(self.models[name], "upgrade_state_dict", None) if name in self.models else None
        return upgrade(state) if upgrade is not None else state


def missing_frame_batch(policy, neighbours, targets, device="cpu"):
    """A missing-frame policy (Method.missing_frames) applied to one other frame f of a
    batch at prediction: neighbours[k] is frame f of the k-th target (3 x h x w), None where
    that target has none; targets[k] (3 x h x w, read only there) stands in for it, zeroed
    under "black". -> (B x 3 x h x w on `device`, B flags on the CPU: 1.0 where missing,
    else 0.0), the ("color", f, 0) and ("missing", f) entries predict reads. "error" is the
    caller's to report (with its own message) before; a frame it lets through stands in as
    under "duplicate"."""
    flags = torch.tensor([0.0 if image is not None else 1.0 for image in neighbours])
    batch = torch.stack([image if image is not None else targets[k] for k, image in enumerate(neighbours)])
    batch = batch.to(device)
    if policy == "black":
        batch = batch * (1 - flags.to(device)).view(-1, 1, 1, 1)
    return batch, flags


def method_from_weight_files(folder):
    """The registered method whose weight_signature files are all in `folder`, or None."""
    from methods import METHODS, load_all_methods
    load_all_methods()
    for name, cls in METHODS.items():
        if cls.weight_signature and all(os.path.isfile(os.path.join(folder, f)) for f in cls.weight_signature):
            return name
    return None


def load_state_file(path):
    """A weight file as a plain state dict: `module.` prefixes (DataParallel/DDP) removed,
    non-tensor entries (height, width, ...) dropped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"{path} is not a readable PyTorch weight file ({e})") from None
    return {k[len("module."):] if k.startswith("module.") else k: v
            for k, v in state.items() if isinstance(v, torch.Tensor)}


def encoder_info(folder):
    """height, width, use_stereo stored in a folder's encoder.pth (monodepth2 format)."""
    path = os.path.join(folder, "encoder.pth")
    if not os.path.isfile(path):
        return {}
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in state.items() if k in ENCODER_INFO_KEYS}


def folder_options(folder):
    """The options a weight folder was trained with: its opt.json, else the opt.json of the
    models/ folder that holds it (older runs), else None (a monodepth2 folder)."""
    for path in (os.path.join(folder, "opt.json"), os.path.join(os.path.dirname(os.path.normpath(folder)), "opt.json")):
        if os.path.isfile(path):
            with open(path) as f:
                try:
                    return json.load(f)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path} is not valid JSON ({e})") from None
    return None


RESNET_BLOCKS = {(2, False): 18, (6, False): 34, (6, True): 50, (23, True): 101, (36, True): 152}


def monodepth2_options(folder):
    """Options of a monodepth2 folder without opt.json: ResNet depth from encoder.pth's
    layer3 blocks and block type, size and stereo from its extra entries."""
    path = os.path.join(folder, "encoder.pth")
    if not os.path.isfile(path):
        raise SystemExit(f"--load_weights_folder {folder}: missing encoder.pth (and no opt.json)")
    state = load_state_file(path)
    blocks = len({k.split(".")[2] for k in state if k.startswith("encoder.layer3.")})
    bottleneck = any(k.startswith("encoder.layer1.0.conv3") for k in state)
    if (blocks, bottleneck) not in RESNET_BLOCKS:
        raise SystemExit(f"{path}: not a monodepth2 ResNet encoder ({blocks} blocks in layer3); "
                         "add the opt.json it was trained with")
    saved = {"method": "monodepth2", "num_layers": RESNET_BLOCKS[(blocks, bottleneck)]}
    saved.update(encoder_info(folder))
    return saved


def load_for_inference(folder, device="cpu", networks=None, **overrides):
    """Build the method a weight folder was trained with (its opt.json, or a monodepth2
    folder's encoder.pth), load the networks inference needs (`networks`: a list of names,
    or "all"; default the method's inference_models), strictly, and return it in eval mode
    on `device`. `overrides` replace options (e.g. min_depth)."""
    from options import options_for_inference
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise SystemExit(f"--load_weights_folder {folder}: no such folder")
    saved = folder_options(folder)
    has_options = saved is not None
    if not (saved or {}).get("method"):  # a reference implementation's folder: its files say which
        guessed = method_from_weight_files(folder)
        if guessed:
            print(f"-> {folder}: no method in its options; its weight files are {guessed}'s")
            saved = dict(saved or {}, method=guessed)
    saved = saved or monodepth2_options(folder)
    info = encoder_info(folder)
    saved.update({k: v for k, v in info.items() if k in ("height", "width")})
    opt = options_for_inference(saved, overrides)
    from methods import build_method
    method = build_method(opt)
    # True / False when the folder says; None for a folder that does not (scaling not checked)
    method.trained_with_stereo = bool(opt.use_stereo) if has_options else info.get("use_stereo")
    names = method.inference_models if networks is None else list(method.models) if networks == "all" else networks
    method.load_weights(folder, names, strict=True)
    return method.to(device).eval()

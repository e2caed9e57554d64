"""What every method gives the Trainer.

A method owns its networks in `self.models` (an nn.ModuleDict whose keys are the weight
file names, e.g. encoder -> encoder.pth), turns a batch into outputs, and returns its loss
as a dict of named terms that the Trainer sums. Hooks run at the end of steps and epochs.
"""
import os
import warnings

import torch
import torch.nn as nn

from utils import atomic_torch_save


class Method(nn.Module):
    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.models = nn.ModuleDict()

    # --- training
    def parameters_to_train(self):
        return [p for p in self.models.parameters() if p.requires_grad]

    def forward(self, inputs):
        raise NotImplementedError

    def compute_losses(self, inputs, outputs):
        """-> (terms: name -> scalar tensor, summed by the Trainer; logs: name -> scalar)."""
        raise NotImplementedError

    def on_step_end(self, step):
        pass

    def on_epoch_end(self, epoch):
        pass

    def images_to_log(self, inputs, outputs, n):
        return {}

    # --- inference
    def predict_disp(self, color):
        """B x 3 x H x W in [0, 1] -> sigmoid disparity B x 1 x H x W."""
        raise NotImplementedError

    # --- weights in monodepth2's folder format
    def save_weights(self, folder, extra_encoder_info):
        os.makedirs(folder, exist_ok=True)
        for name, model in self.models.items():
            state = model.state_dict()
            if name == "encoder":
                state.update(extra_encoder_info)
            atomic_torch_save(state, os.path.join(folder, f"{name}.pth"))

    def load_weights(self, folder, names):
        """Load `names` from a monodepth2-style folder, keeping matching keys only; a
        missing file or key is reported, not fatal (fine-tuning from another recipe)."""
        if not os.path.isdir(folder):
            raise SystemExit(f"--load_weights_folder {folder}: no such folder")
        loaded = []
        for name in names:
            if name not in self.models:
                continue
            path = os.path.join(folder, f"{name}.pth")
            if not os.path.isfile(path):
                warnings.warn(f"{path} not found: {name} keeps its initial weights")
                continue
            state = load_state_file(path)
            model_state = self.models[name].state_dict()
            matched = {k: v for k, v in state.items() if k in model_state and v.shape == model_state[k].shape}
            skipped = [k for k in model_state if k not in matched]
            if skipped:
                warnings.warn(f"{path}: {len(skipped)} parameters not loaded (e.g. {skipped[:3]})")
            model_state.update(matched)
            self.models[name].load_state_dict(model_state)
            loaded.append(name)
        return loaded


def load_state_file(path):
    """A weight file as a plain state dict: `module.` prefixes (DataParallel/DDP) removed,
    non-tensor entries (height, width, ...) dropped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path} is not a readable PyTorch weight file ({e})") from None
    return {k[len("module."):] if k.startswith("module.") else k: v
            for k, v in state.items() if isinstance(v, torch.Tensor)}

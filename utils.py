"""Small helpers: atomic saving, seeding, time strings, colour maps."""
import io
import os
import random
import tempfile

import numpy as np
import torch


def atomic_write_bytes(path, data):
    """Write `data` to `path` through a temporary file in the same folder and a rename, so
    that a crash or a full disk never leaves a truncated file under `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the mode a plain open() would give (mkstemp's is 0600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj, path):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_numpy_save(path, array=None, **arrays):
    """np.save (one array) or np.savez_compressed (named arrays), written atomically."""
    buffer = io.BytesIO()
    if arrays:
        np.savez_compressed(buffer, **arrays)
    else:
        np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


TF32_CHOICES = ("pytorch", "on", "off")


def set_tf32(choice):
    """--allow_tf32: "on" / "off" set both torch.backends.cuda.matmul.allow_tf32 and
    torch.backends.cudnn.allow_tf32; "pytorch" (or None) leaves PyTorch's own settings. A
    YAML preset's bare on / off arrive as True / False and count as "on" / "off"."""
    if isinstance(choice, bool):
        choice = "on" if choice else "off"
    if choice in (None, "pytorch"):
        return
    if choice not in TF32_CHOICES:
        raise ValueError(f"--allow_tf32 {choice!r}: one of {', '.join(TF32_CHOICES)}")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = choice == "on"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def sec_to_hm_str(t):
    t = int(t)
    return f"{t // 3600:02d}h{(t // 60) % 60:02d}m{t % 60:02d}s"


def colorize_disparity(disp, percentile=95):
    """H x W disparity -> H x W x 3 uint8 magma image (vmin = min, vmax = 95th percentile)."""
    import matplotlib
    vmax = np.percentile(disp, percentile)
    vmin = disp.min()
    norm = np.clip((disp - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    return (matplotlib.colormaps["magma"](norm)[..., :3] * 255).astype(np.uint8)

"""Weight folders (monodepth2's format plus the options that built them) and the resumable
training state. Everything is written to a temporary name and renamed, so a crash or a
full disk never leaves a truncated file and never loses the previous one."""
import json
import os
import random
import shutil

import numpy as np
import torch

from utils import atomic_torch_save, atomic_write_bytes

STATE_FILES = ("incoming.pt", "last.pt", "previous.pt")  # newest complete state first
ENCODER_INFO_KEYS = ("height", "width", "use_stereo")  # what encoder.pth holds beside the weights


def options_json(opt):
    return json.dumps(vars(opt), indent=2, default=str).encode()


def save_weight_folder(method, optimizer, folder, opt):
    """<folder>/{<network>.pth, adam.pth, opt.json}, built in <folder>.tmp and renamed into
    place; the previous folder of that name is replaced only once the new one is complete."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        method.save_weights(tmp, {k: getattr(opt, k) for k in ENCODER_INFO_KEYS})
        atomic_torch_save(optimizer.state_dict(), os.path.join(tmp, "adam.pth"))  # monodepth2's name
        atomic_write_bytes(os.path.join(tmp, "opt.json"), options_json(opt))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the previous folder of that name is untouched
        raise
    return _replace_folder(tmp, folder)


def _replace_folder(tmp, folder):
    """Move the complete folder `tmp` to `folder`; the previous `folder` goes only after."""
    old = folder + ".old"
    if os.path.isdir(folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def link_weight_folder(source, folder):
    """<folder> with hard links to <source>'s files (the same bytes, written once), built in
    <folder>.tmp and renamed into place as save_weight_folder does; copies where the file
    system has no hard links."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for name in os.listdir(source):
            try:
                os.link(os.path.join(source, name), os.path.join(tmp, name))
            except OSError:
                shutil.copy2(os.path.join(source, name), os.path.join(tmp, name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _replace_folder(tmp, folder)


def point_last(models_dir, name):
    """models/last -> the newest weight folder `name` (a relative symbolic link, replaced
    atomically), so that `--load_weights_folder .../models/last` and MISM's
    `--teacher_weights_folder .../models/last` always name the latest epoch. Returns False
    where the file system has no symbolic links (the weights_N folders are unaffected)."""
    link, tmp = os.path.join(models_dir, "last"), os.path.join(models_dir, "last.tmp")
    if os.path.isdir(link) and not os.path.islink(link):
        return False  # a real folder the user made: never replaced
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except (OSError, NotImplementedError):
        return False
    return True


def prune_weight_folders(models_dir, keep, protect=None):
    """Remove all but the newest `keep` weights_<epoch> folders (weights_best stays, and so
    does `protect`, the folder just written, even where an earlier run into the same folder
    left higher epoch numbers)."""
    names = [f"weights_{e}" for e in sorted(int(d[len("weights_"):]) for d in os.listdir(models_dir)
                                            if d.startswith("weights_") and d[len("weights_"):].isdigit())]
    if protect in names:
        names.remove(protect)
        keep -= 1
    for name in names[:len(names) - keep] if keep > 0 else names:
        shutil.rmtree(os.path.join(models_dir, name), ignore_errors=True)


IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable")  # how an update runs, not what it computes


def load_optimizer_state_dict(optimizer, state_dict):
    """optimizer.load_state_dict, keeping this run's implementation choices: a saved state
    carries its groups' flags (a fused Adam's "fused": True), which would otherwise replace
    the ones this run chose (--deterministic's loop; no fused kernel on this device or
    PyTorch)."""
    optimizer.load_state_dict(state_dict)
    for group in optimizer.param_groups:
        for flag in IMPLEMENTATION_FLAGS:
            if flag in optimizer.defaults:
                group[flag] = optimizer.defaults[flag]


def load_optimizer_state(optimizer, folder, group_lrs, log=print):
    """adam.pth of a weight folder into `optimizer` (fine-tuning). The saved state carries
    the old learning rates; each group gets the LR its method declares now (a reference bug
    let adam.pth silently override the 1e-5 of the high-resolution fine-tune)."""
    path = os.path.join(folder, "adam.pth")
    if not os.path.isfile(path):
        log(f"-> {path} not found: the optimiser starts afresh")
        return False
    try:
        load_optimizer_state_dict(optimizer, torch.load(path, map_location="cpu", weights_only=True))
    except (ValueError, KeyError) as e:
        log(f"-> {path} does not match these parameters ({e}): the optimiser starts afresh")
        return False
    reset = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if any(torch.is_tensor(v) and v.dim() > 0 and v.shape != p.shape for v in state.values()):
                optimizer.state.pop(p)  # a network of another shape: its moments start afresh
                reset += 1
    for group, lr in zip(optimizer.param_groups, group_lrs):
        group["lr"] = group["initial_lr"] = lr
    log(f"-> Loaded the optimiser state from {path}" + (f" ({reset} tensors of another shape start afresh)"
                                                        if reset else ""))
    return True


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


LINKED_KEEP = 2  # linked states whose files are kept: last.pt and previous.pt name at most these


def save_state(state_dir, state, weight_folder=None, extra_keys=()):
    """state_dir/last.pt, complete on disk (incoming.pt) before the rotation; the state
    before it is kept as previous.pt.

    weight_folder: a weight folder written from these very networks and optimiser (the epoch
    end). The state then holds its network and optimiser files as hard links (state_dir/
    linked/, the same bytes written once) instead of a second copy; `extra_keys` are the
    entries save_weights added to encoder.pth. Links of older states are removed once no
    state file can name them."""
    os.makedirs(state_dir, exist_ok=True)
    if weight_folder is not None:
        state = _link_weight_files(state_dir, state, weight_folder, extra_keys)
    last = os.path.join(state_dir, "last.pt")
    incoming = os.path.join(state_dir, "incoming.pt")
    atomic_torch_save(state, incoming)
    if os.path.isfile(last):
        os.replace(last, os.path.join(state_dir, "previous.pt"))
    os.replace(incoming, last)
    if weight_folder is not None:
        _remove_old_links(state_dir)
    return last


def _link_weight_files(state_dir, state, weight_folder, extra_keys):
    models = state["models"]
    names = sorted({k.split(".")[1] for k in models if k.startswith("models.")})
    names = [n for n in names if os.path.isfile(os.path.join(weight_folder, f"{n}.pth"))]
    folder = os.path.join(state_dir, "linked", f"step_{state['step']:012d}")
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in names + ["adam"]:
        source, target = os.path.join(weight_folder, f"{name}.pth"), os.path.join(tmp, f"{name}.pth")
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    _replace_folder(tmp, folder)
    state = dict(state)
    state["models"] = {k: v for k, v in models.items() if not (k.startswith("models.") and k.split(".")[1] in names)}
    state["optimizer"] = None
    state["linked"] = {"folder": os.path.relpath(folder, state_dir), "networks": names,
                       "extra_keys": list(extra_keys)}
    return state


def _remove_old_links(state_dir):
    root = os.path.join(state_dir, "linked")
    steps = sorted(d for d in os.listdir(root) if d.startswith("step_") and not d.endswith((".tmp", ".old")))
    for name in steps[:-LINKED_KEEP]:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _read_state(path):
    state = torch.load(path, map_location="cpu", weights_only=False)
    linked = state.get("linked")
    if linked:
        folder = os.path.join(os.path.dirname(path), linked["folder"])
        for name in linked["networks"]:
            network = torch.load(os.path.join(folder, f"{name}.pth"), map_location="cpu", weights_only=True)
            if name == "encoder":
                network = {k: v for k, v in network.items() if k not in linked["extra_keys"]}
            state["models"].update({f"models.{name}.{k}": v for k, v in network.items()})
        state["optimizer"] = torch.load(os.path.join(folder, "adam.pth"), map_location="cpu", weights_only=True)
    return state


def load_latest_state(state_dir, log=print):
    """(state, path) of the newest readable state; a damaged file is reported and the
    next older one used. SystemExit when there is none."""
    for name in STATE_FILES:
        path = os.path.join(state_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            return _read_state(path), path
        except Exception as e:
            log(f"-> {path} is damaged or truncated ({type(e).__name__}: {e}); falling back to the previous state")
    raise SystemExit(f"--resume: no readable state in {state_dir} (start without --resume)")

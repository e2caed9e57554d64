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


def options_json(opt):
    return json.dumps(vars(opt), indent=2, default=str).encode()


def save_weight_folder(method, optimizer, folder, opt):
    """<folder>/{<network>.pth, adam.pth, opt.json}, built in <folder>.tmp and renamed into
    place; the previous folder of that name is replaced only once the new one is complete."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        method.save_weights(tmp, {"height": opt.height, "width": opt.width, "use_stereo": opt.use_stereo})
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


def load_optimizer_state(optimizer, folder, group_lrs, log=print):
    """adam.pth of a weight folder into `optimizer` (fine-tuning). The saved state carries
    the old learning rates; each group gets the LR its method declares now (a reference bug
    let adam.pth silently override the 1e-5 of the high-resolution fine-tune)."""
    path = os.path.join(folder, "adam.pth")
    if not os.path.isfile(path):
        log(f"-> {path} not found: the optimiser starts afresh")
        return False
    try:
        optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
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


def save_state(state_dir, state):
    """state_dir/last.pt, complete on disk (incoming.pt) before the rotation; the state
    before it is kept as previous.pt."""
    os.makedirs(state_dir, exist_ok=True)
    last = os.path.join(state_dir, "last.pt")
    incoming = os.path.join(state_dir, "incoming.pt")
    atomic_torch_save(state, incoming)
    if os.path.isfile(last):
        os.replace(last, os.path.join(state_dir, "previous.pt"))
    os.replace(incoming, last)
    return last


def load_latest_state(state_dir, log=print):
    """(state, path) of the newest readable state; a damaged file is reported and the
    next older one used. SystemExit when there is none."""
    for name in STATE_FILES:
        path = os.path.join(state_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=False), path
        except Exception as e:
            log(f"-> {path} is damaged or truncated ({type(e).__name__}: {e}); falling back to the previous state")
    raise SystemExit(f"--resume: no readable state in {state_dir} (start without --resume)")

"""The one training loop. It knows nothing about any paper or dataset: a method (methods/)
declares its networks, parameter groups, data needs and hooks, turns a batch into outputs
and named loss terms; a dataset (datasets/) builds items and names its evaluation
protocol (evaluation/). The Trainer sums the terms, steps the optimiser and the schedule,
and owns what surrounds that: one process or DDP (torchrun), AMP, validation, and (with
training/) weight folders, the resumable state and the logs.
"""
import argparse
import collections
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import DATASETS
from datasets.fast_loader import collate_items, fill_cache
from datasets.mono_dataset import ItemError, check_first_item
from evaluation import DEPTH_METRIC_NAMES, PROTOCOLS
from methods import build_method, method_class
from options import missing_data_hint, read_split_file, resolve_split_dir, sync_bn_mode
from training import checkpoints
from training.logger import RunLogger
from training.profile import TIMELINE
from training.sampler import EpochSampler, distributed_context  # noqa: F401 (re-exported)
from utils import atomic_write_bytes, seed_everything, set_tf32

LOG_EVERY_STEP_UNTIL = 2000  # log at log_frequency early on, then every 2000 steps


def logs_at(batch, step, log_frequency):
    """Whether the step of an epoch's batch `batch` (the run's step `step`) writes a log line."""
    early = batch % log_frequency == 0 and step < LOG_EVERY_STEP_UNTIL
    return early or (step % LOG_EVERY_STEP_UNTIL == 0 and step > 0)


def never(*_):
    return False


LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log"}


class NonFiniteLossError(RuntimeError):
    pass


def use_sync_batchnorm(mode, world_size, device_type, log=print):
    """Whether --sync_bn `mode` converts BatchNorm to SyncBatchNorm in a run of `world_size`
    processes on `device_type`: never with one process; on: yes (stops on CPU, where
    SyncBatchNorm has no kernel); auto: yes on CUDA, and on CPU no, said once through `log`."""
    mode = sync_bn_mode(mode)
    if mode == "off" or world_size <= 1:
        return False
    if device_type != "cuda":
        if mode == "on":
            raise SystemExit("--sync_bn needs CUDA devices (SyncBatchNorm has no CPU kernel)")
        log(f"-> --sync_bn auto: {world_size} processes on {device_type}, where SyncBatchNorm has no kernel: "
            "each process keeps plain BatchNorm (statistics of its own batch)")
        return False
    return True


def to_sync_batchnorm(model):
    """`model` with every BatchNorm layer turned into a SyncBatchNorm (same parameters and
    statistics), as torch.nn.SyncBatchNorm.convert_sync_batchnorm does."""
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def schedule_factor(factor, base_lr, step):
    return factor(step, base_lr)


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM set `requested`; the loop reads it where the training state
    is complete (after a step, between validation batches, after an epoch's saving), so that
    the state it then saves holds exactly what was applied and a resumed run repeats nothing.
    A second signal stops at once. Handlers are installed only in the main thread."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.requested = False
        self.previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("-> stopping after the current step (again to stop at once)")

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    sig = getattr(signal, name)
                    self.previous[sig] = signal.getsignal(sig)
                    signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        return False


def build_dataset(opt, names, is_train, split_file):
    """The dataset of `names` (split-file lines) as a training run of `opt` reads them: its
    method's frames, targets, augmentations (training items only) and missing-frame policy."""
    cls = method_class(opt.method)
    path = "encoded" if opt.decode_on_device else "fast" if opt.fast_loader else "default"
    dataset = DATASETS[opt.dataset](opt.data_path, names, opt.height, opt.width, opt.frame_ids, len(opt.scales),
                                    is_train=is_train, img_ext=".png" if opt.png else ".jpg",
                                    split_file=split_file, input_path=path, cache_dir=opt.cache_dir,
                                    targets=cls.item_targets(opt), seed=opt.seed,
                                    augmentations=cls.item_augmentations(opt), **cls.dataset_options(opt))
    dataset.skip_bad_items = opt.skip_bad_items
    dataset.missing_frames = cls.missing_frames(opt, is_train)
    return dataset


def fused_adam_supported(device):
    """Whether PyTorch has a fused Adam for this device (CUDA; the CPU from PyTorch 2.4 on)."""
    if device.type not in ("cuda", "cpu"):
        return False
    try:
        torch.optim.Adam([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def to_channels_last(module):
    """Channels-last memory for every 4-D parameter and buffer (2-D convolutions). Module.to
    (memory_format=...) would try it on 5-D ones too (3-D convolutions of a cost volume) and fail."""
    for m in module.modules():
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is not None and t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return module


class Trainer:
    def __init__(self, opt):
        self.opt = opt
        self.rank, self.world_size, self.local_rank = distributed_context()
        self.is_main = self.rank == 0
        use_cuda = torch.cuda.is_available() and not opt.no_cuda
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        self._set_determinism()
        set_tf32(getattr(opt, "allow_tf32", "pytorch"))
        seed_everything(opt.seed)
        self.log_path = os.path.join(os.path.expanduser(opt.log_dir), opt.model_name)
        self.state_dir = os.path.join(self.log_path, "state")
        self.models_dir = os.path.join(self.log_path, "models")
        if not opt.resume:
            self._claim_run_folder()
        self.logger = RunLogger(self.log_path)
        self.skipped_items = 0

        # the user's own inputs first, before anything slow or networked (ImageNet weights)
        if opt.load_weights_folder and not opt.resume and not os.path.isdir(os.path.expanduser(opt.load_weights_folder)):
            raise SystemExit(f"--load_weights_folder {opt.load_weights_folder}: no such folder")
        self._build_loaders()
        networks_started = time.perf_counter()
        self.method = build_method(opt).to(self.device)
        if opt.channels_last:
            to_channels_last(self.method)
        loaded = []
        if opt.load_weights_folder and not opt.resume:
            loaded = self.method.load_weights(os.path.expanduser(opt.load_weights_folder), opt.models_to_load)
            self._print(f"-> Loaded {', '.join(loaded)} from {opt.load_weights_folder}")
        self.sync_bn = use_sync_batchnorm(opt.sync_bn, self.world_size, self.device.type, self._print)
        if self.sync_bn:
            self.method = to_sync_batchnorm(self.method)
        if opt.compile:
            for model in self.method.models.values():
                model.compile()
        self.model = self.method
        TIMELINE.add("networks", time.perf_counter() - networks_started)
        if self.world_size > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.method.find_unused_parameters)

        with TIMELINE.phase("optimiser"):
            self.optimizer = self._build_optimizer()
        if opt.load_weights_folder and not opt.resume:
            trained = [name for name, model in self.method.models.items()
                       if any(p.requires_grad for p in model.parameters())]
            not_loaded = [name for name in trained if name not in loaded]
            if not_loaded:  # adam.pth's moments belong to every network of that run, in order
                self._print(f"-> the optimiser starts afresh: {', '.join(not_loaded)} not loaded from "
                            f"{opt.load_weights_folder} (its adam.pth is read only when every trained "
                            "network is)")
            else:
                checkpoints.load_optimizer_state(self.optimizer, os.path.expanduser(opt.load_weights_folder),
                                                 self.group_lrs, self._print)
        self.scheduler = self._build_scheduler()
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opt.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=opt.amp == "fp16" and self.device.type == "cuda")
        self.step, self.epoch, self.start_batch = 0, 0, 0
        self.epoch_end_done = False  # the method's on_epoch_end ran for self.epoch (validation may be pending)
        self.stop = StopRequest()
        self.nonfinite_in_row = 0
        self.best = None
        self.loss_history = []
        self.step_times = collections.deque(maxlen=50)
        self.last_step_end, self.val_seconds = None, None
        if opt.resume:
            self._resume()
        self._print(f"Training model named: {opt.model_name} ({type(self.method).__name__})\n"
                    f"  models and logs in {self.log_path}\n"
                    f"  device: {self.device}, processes: {self.world_size}, batch per process: "
                    f"{opt.batch_size}\n  {len(self.train_dataset)} training items, "
                    f"{len(self.val_dataset)} validation items")

    # ------------------------------------------------------------------ set-up
    RUN_FILES = ("models", "state", "train", "val", "train_steps.jsonl", "metrics.jsonl", "split")

    def _claim_run_folder(self):
        """A new run never mixes with an earlier one in the same folder: refused, unless
        --overwrite removes the earlier run's files first."""
        held = [n for n in self.RUN_FILES if os.path.exists(os.path.join(self.log_path, n))]
        if not held:
            return
        if not getattr(self.opt, "overwrite", False):
            raise SystemExit(f"{self.log_path} already holds a run ({', '.join(held)}): continue it with --resume, "
                             "replace it with --overwrite, or choose another --model_name")
        inside = [f"--{k} {v}" for k, v in sorted(vars(self.opt).items()) if isinstance(v, str) and v
                  and os.path.exists(os.path.expanduser(v)) and os.path.realpath(os.path.expanduser(v)).startswith(
                      os.path.realpath(self.log_path) + os.sep)]
        if inside:
            raise SystemExit(f"--overwrite would remove what {', '.join(inside)} reads from {self.log_path}: copy it "
                             "elsewhere first, or choose another --model_name")
        if self.is_main:
            self._print(f"-> --overwrite: removing the earlier run in {self.log_path}")
            for name in held:
                path = os.path.join(self.log_path, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        self._barrier()

    def _print(self, *args):
        if self.is_main:
            tqdm.write(" ".join(str(a) for a in args))

    def _set_determinism(self):
        if self.opt.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # CUDA has no deterministic backward for some operations the methods use, such as
            # grid_sample (every method's warping), reflection padding and bilinear upsampling:
            # strict mode raises on the first step. There these run as they are (PyTorch warns
            # once per operation); convolutions, cuBLAS and index/scatter operations still take
            # their deterministic kernels.
            on_cuda = self.device.type == "cuda"
            torch.use_deterministic_algorithms(True, warn_only=on_cuda)
            if on_cuda:
                self._print("-> --deterministic on CUDA: deterministic kernels where PyTorch has them; some "
                            "backward passes (such as grid_sample's, reflection padding's and bilinear "
                            "upsampling's) have none there, so runs can still differ slightly (see the warnings)")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _build_optimizer(self):
        """One optimiser over the method's parameter groups, each at its own LR."""
        opt = self.opt
        groups = self.method.param_groups()
        self.group_lrs = [g["lr"] for g in groups]
        kwargs = dict(weight_decay=opt.weight_decay)
        if getattr(opt, "amsgrad", False):
            kwargs["amsgrad"] = True
        if not opt.deterministic and fused_adam_supported(self.device):
            # one fused kernel over all parameters: on the 2-core CPU 8.8 ms per update of 27 M
            # parameters against 23.8 ms for the per-parameter loop (benchmarks/step_parts.py)
            kwargs["fused"] = True
        cls = torch.optim.AdamW if opt.optimizer == "adamw" else torch.optim.Adam
        return cls([dict(g) for g in groups], lr=self.group_lrs[0], **kwargs)

    def _reset_optimizer_if_asked(self):
        """A method's request (Method.reset_optimizer_state): Adam's moments and step counts
        start afresh, as with a newly created optimiser; the LRs are unchanged."""
        if self.method.reset_optimizer_state:
            self.optimizer.state.clear()
            self.method.reset_optimizer_state = False
            self._weights_at_step = None  # the last weight folder's adam.pth no longer matches
            self._print("-> optimiser state reset (the method asked for it)")

    def _build_scheduler(self):
        """One LambdaLR over optimiser steps, built once (never rebuilt when parts are frozen
        later, which would reset the LR), one factor per parameter group. step: x
        decay_rate every decay_step epochs (or at each of several decay_step epochs); exponential: x decay_rate every epoch; cosine:
        every group to eta_min over the run; optional linear warm-up."""
        opt = self.opt
        steps_per_epoch = max(len(self.train_loader), 1)
        total = steps_per_epoch * opt.num_epochs
        if opt.max_steps:
            total = min(total, opt.max_steps)
        steps = opt.decay_step if isinstance(opt.decay_step, (list, tuple)) else [opt.decay_step]
        milestones = sorted(steps) if len(steps) > 1 else None
        decay_step = steps[0] or opt.scheduler_step_size

        method = self.method

        def factor(step, base_lr):
            epoch = method.schedule_epoch(step // steps_per_epoch)
            if opt.lr_sche_type == "step":
                passed = sum(epoch >= m for m in milestones) if milestones else epoch // decay_step
                f = opt.decay_rate ** passed
            elif opt.lr_sche_type == "exponential":
                f = opt.decay_rate ** epoch
            else:  # every group ends at eta_min
                t = min(step / max(total, 1), 1.0)
                floor = opt.eta_min / base_lr
                f = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
            if opt.warmup_steps and step < opt.warmup_steps:
                f *= (step + 1) / opt.warmup_steps
            return f
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [functools.partial(schedule_factor, factor, lr) for lr in self.group_lrs])

    def _make_dataset(self, names, is_train, split_file):
        return build_dataset(self.opt, names, is_train, split_file)

    def _build_loaders(self):
        opt = self.opt
        if not os.path.isdir(opt.data_path):
            raise SystemExit(f"--data_path {opt.data_path}: no such folder ({missing_data_hint(opt.data_path)})")
        split_dir = resolve_split_dir(opt.split, opt.data_path)
        train_file = os.path.join(split_dir, "train_files.txt")
        val_dir = resolve_split_dir(opt.val_split, opt.data_path) if opt.val_split else split_dir
        val_file = os.path.join(val_dir, "val_files.txt")
        # a split built from options (e.g. whole sequences) is written beside the run, so that it
        # is on record; a resumed run reads that record back rather than rebuilding it
        folder = os.path.join(self.log_path, "split")
        recorded = {n: os.path.join(folder, f"{n}_files.txt") for n in ("train", "val")}
        recorded = {n: path for n, path in recorded.items() if os.path.isfile(path)}
        if not (opt.resume and recorded):
            generated = getattr(DATASETS[opt.dataset], "split_from_options", lambda o: None)(opt) or {}
            recorded = {n: os.path.join(folder, f"{n}_files.txt") for n in generated}
            if generated and self.is_main:
                os.makedirs(folder, exist_ok=True)
                for name, lines in generated.items():
                    atomic_write_bytes(recorded[name], ("\n".join(lines) + "\n").encode())
            if generated:
                self._barrier()
        train_file, val_file = recorded.get("train", train_file), recorded.get("val", val_file)
        datasets_started = time.perf_counter()
        self.val_file = os.path.relpath(val_file) if not os.path.relpath(val_file).startswith("..") else val_file
        self.train_dataset = self._make_dataset(read_split_file(train_file), True, train_file)
        self._val_names, self._val_file_path = read_split_file(val_file), val_file  # read once: both loaders use them
        self.val_dataset = self._make_dataset(self._val_names, False, val_file)
        for dataset in (self.train_dataset, self.val_dataset):
            check_first_item(dataset)
            dataset.errors_as_items = True
        TIMELINE.add("datasets", time.perf_counter() - datasets_started)
        if opt.cache_dir and opt.fast_loader and self.is_main:
            with TIMELINE.phase("cache"):
                for dataset, name in ((self.train_dataset, "train"), (self.val_dataset, "val")):
                    fill_cache(dataset, opt.num_workers, f"caching {name} images", opt.no_progress)
        self._barrier()
        self.protocol = PROTOCOLS[self.val_dataset.eval_protocol]
        if len(self.train_dataset) < opt.batch_size * self.world_size:
            raise SystemExit(f"{train_file} has {len(self.train_dataset)} items, fewer than "
                             f"--batch_size {opt.batch_size} x {self.world_size} processes")
        workers = opt.num_workers
        cores = os.cpu_count() or 1
        if workers > cores:  # more would only queue (and PyTorch warns at every loader)
            self._print(f"-> --num_workers {workers}: this machine has {cores} CPU cores, using {cores}")
            workers = cores
        # the loaders' own generator: creating an iterator must not draw from the global RNG,
        # or a resumed run's random stream would be shifted
        loader_rng = torch.Generator()
        loader_rng.manual_seed(opt.seed)
        self.loader_options = dict(num_workers=workers, pin_memory=self.device.type == "cuda",
                                   collate_fn=collate_items)
        common = dict(self.loader_options, persistent_workers=workers > 0, generator=loader_rng)
        if workers > 0:
            common["prefetch_factor"] = 4 if opt.fast_loader else 2
        self.train_sampler = EpochSampler(len(self.train_dataset), opt.batch_size, True, opt.seed,
                                          self.rank, self.world_size)
        if self.train_dataset.load_depth:
            # the ground truth (velodyne points projected per item) only scores the batches of
            # log steps: the other items skip reading it (~95 % of a cached fast-path item's cost)
            self.train_sampler.depth_gt_batches = functools.partial(
                logs_at, log_frequency=opt.log_frequency) if self.is_main else never
        self.train_loader = DataLoader(self.train_dataset, opt.batch_size, sampler=self.train_sampler,
                                       drop_last=True, **common)
        val_batch = max(min(opt.batch_size, len(self.val_dataset)), 1)
        self.val_sampler = EpochSampler(len(self.val_dataset), val_batch, True, opt.seed + 1)
        # the in-training check reads one batch per log line: in this process (workers would
        # prefetch batches that wait, unused, until the next log line)
        in_process = {k: v for k, v in common.items() if k != "prefetch_factor"}
        in_process.update(num_workers=0, persistent_workers=False)
        self.val_loader = DataLoader(self.val_dataset, val_batch, sampler=self.val_sampler, drop_last=True, **in_process)
        self.val_iter = None
        self.val_epoch_loader = None  # built at the first validation (it needs the method's frames)

    def _epoch_validation_loader(self):
        """The epoch's validation loader, built once (its workers persist), with a generator of
        its own, so that validating never draws from the training's random streams. Its items
        hold only the frames the method's predict reads (inference_frames): the other frames
        of the training items would be read and never used."""
        if self.val_epoch_loader is None:
            opt, dataset = self.opt, self.val_dataset
            frames = [f for f in opt.frame_ids if f in tuple(self.method.inference_frames)]
            if set(frames) == set(self.method.inference_frames) and len(frames) < len(dataset.frame_ids):
                frame_opt = argparse.Namespace(**vars(opt))
                frame_opt.frame_ids = frames
                dataset = build_dataset(frame_opt, self._val_names, False, self._val_file_path)
                dataset.errors_as_items = True
            self.val_epoch_dataset = dataset
            val_rng = torch.Generator()
            val_rng.manual_seed(opt.seed + 2)
            workers = min(self.loader_options["num_workers"], 4)
            self.val_epoch_loader = DataLoader(dataset, max(min(opt.batch_size, len(dataset)), 1), shuffle=False,
                                               generator=val_rng, num_workers=workers,
                                               persistent_workers=workers > 0,
                                               pin_memory=self.loader_options["pin_memory"],
                                               collate_fn=collate_items)
        return self.val_epoch_loader

    def _to_device(self, inputs, dataset=None):
        """A loader batch on the device, finished there by the fast input path."""
        dataset = dataset or self.train_dataset
        if "__error__" in inputs:
            raise ItemError("\n".join(inputs["__error__"]) + "\n(--skip_bad_items skips such items)")
        if "skipped_items" in inputs:
            self.skipped_items += int(inputs.pop("skipped_items").sum())
        out = {}
        for k, v in inputs.items():
            if isinstance(v, list) or (isinstance(k, tuple) and k[0] == "aug"):
                out[k] = v  # JPEG bytes, augmentation draws: the dataset's finish_batch takes them from here
                continue
            v = v.to(self.device, non_blocking=True)
            if self.opt.channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        if dataset.fast:
            out = dataset.finish_batch(out, self.device)
        return out

    # ------------------------------------------------------------------ loop
    def train(self):
        opt = self.opt
        self.start_time = time.time()
        self.num_total_steps = len(self.train_loader) * opt.num_epochs
        if opt.max_steps:
            self.num_total_steps = min(self.num_total_steps, opt.max_steps)
        if self.is_main:
            os.makedirs(self.models_dir, exist_ok=True)
            atomic_write_bytes(os.path.join(self.models_dir, "opt.json"), checkpoints.options_json(opt))
        try:
            with self.stop:
                self._train_epochs()
            self._print(self.summary_line())
            if getattr(opt, "profile", False) and self.is_main:
                TIMELINE.write(os.path.join(self.log_path, "profile.json"))
        except KeyboardInterrupt:
            self._print("-> interrupted: saving a resumable state (continue with --resume)")
            self.save_state()
            raise SystemExit(130)
        except BaseException as e:  # whatever stopped training, the last completed step is kept
            self._print(f"-> training stopped at step {self.step} ({type(e).__name__}): saving a resumable "
                        "state (continue with --resume)")
            try:
                self.save_state()
            except Exception as save_error:
                self._print(f"-> could not save the state ({save_error}); the previous one is kept in "
                            f"{self.state_dir}")
            raise
        finally:
            self.logger.close()
            self.close_loaders()
            if self.skipped_items:
                self._print(f"-> {self.skipped_items} unreadable items were skipped (--skip_bad_items; the log "
                            "lines beginning '-> skipped:' name them)")
            if self.world_size > 1 and dist.is_initialized():
                self._barrier()
                dist.destroy_process_group()
        return self

    def close_loaders(self):
        """Stop the loaders' persistent workers now (else the interpreter's exit waits for them)."""
        for loader in (getattr(self, "train_loader", None), getattr(self, "val_loader", None),
                       getattr(self, "val_epoch_loader", None)):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
                loader._iterator = None
        self.val_iter = None

    def _train_epochs(self):
        opt = self.opt
        while self.epoch < opt.num_epochs and not self.done():
            self.method.on_epoch_start(self.epoch, self.start_batch)
            self._reset_optimizer_if_asked()
            finished = self.run_epoch()
            if finished:
                if not self.epoch_end_done:  # a run stopped during validation ran it already
                    self.method.on_epoch_end(self.epoch)
                    self.epoch_end_done = True
                if self.is_main and ((self.epoch + 1) % opt.save_frequency == 0 or self.done()
                                     or self.epoch + 1 == opt.num_epochs):
                    self.save_model()  # before validation: a best epoch's folder is then linked, not rewritten
                self.validate_epoch()
                self._barrier()
                self.epoch += 1
                self.start_batch = 0
                self.epoch_end_done = False
                self.save_state()
                # from here on (the next epoch's start may change the networks or the optimiser
                # before its first step) a state of this step holds its own copy
                self._weights_at_step = None
            elif self.done():  # --max_steps reached inside an epoch
                if self.is_main:
                    self.save_model()
                self.save_state()
            self._stop_if_asked()

    def summary_line(self):
        """One line at the end of a run: the best epoch, its metric, where the weights are."""
        last = os.path.join(self.models_dir, "last")
        where = os.path.realpath(last) if os.path.exists(last) else self.models_dir
        best_file = os.path.join(self.models_dir, "best.json")
        if self.best is not None and os.path.isfile(best_file):
            with open(best_file) as f:
                record = json.load(f)
            return (f"-> finished: best epoch {record['epoch']} ({self.opt.best_metric} {self.best:.4f}) in "
                    f"{os.path.join(self.models_dir, 'weights_best')}; last weights in {where}")
        return f"-> finished at step {self.step} (no validation scored); weights in {where}"

    def _stop_if_asked(self):
        """Where the training state is complete (after a step, between validation batches,
        after an epoch's saving): stop if a signal asked for it (every process together)."""
        asked = self.stop.requested
        if self.world_size > 1 and dist.is_initialized():
            flag = torch.tensor([float(asked)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            asked = bool(flag.item())
        if asked:
            raise KeyboardInterrupt

    def _barrier(self):
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()

    def done(self):
        return bool(self.opt.max_steps) and self.step >= self.opt.max_steps

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def process_batch(self, inputs, distributed=True, dataset=None):
        """distributed=False runs the bare method (rank-0-only work: no DDP collectives)."""
        inputs = self._to_device(inputs, dataset)
        with self.autocast():
            outputs = (self.model if distributed else self.method)(inputs)
        # losses in float32: AMP covers the networks only
        outputs = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in outputs.items()}
        terms, logs = self.method.compute_losses(inputs, outputs)
        loss = sum(t.float() for t in terms.values())
        return inputs, outputs, loss, terms, logs

    def run_epoch(self):
        """One epoch from self.start_batch; returns False if training stopped inside it."""
        opt = self.opt
        self.method.train()
        self.train_sampler.set_epoch(self.epoch, self.start_batch, self.step)
        total = len(self.train_loader) + self.start_batch
        if opt.max_steps:  # the bar (and its time left) ends where --max_steps does
            total = min(total, self.start_batch + max(opt.max_steps - self.step, 0))
        bar = tqdm(total=total, initial=self.start_batch,
                   desc=f"epoch {self.epoch}", unit="batch", disable=opt.no_progress or not self.is_main,
                   dynamic_ncols=True)
        batch_idx = first_batch = self.start_batch
        waiting = time.perf_counter()  # the wait for each batch (the first: worker start included)
        for inputs in self.train_loader:
            TIMELINE.add("first_batch" if batch_idx == first_batch else "data_wait", time.perf_counter() - waiting)
            computing = time.perf_counter()
            before = time.time()
            step, lr = self.step, self.optimizer.param_groups[0]["lr"]
            inputs, outputs, loss, terms, logs = self.process_batch(inputs)
            self.optimizer.zero_grad(set_to_none=True)
            if not self._finite(loss):
                self._skip_nonfinite(loss)
            else:
                self.nonfinite_in_row = 0
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.scheduler.step()
            self.method.on_train_step_end(step, inputs, outputs)
            self._reset_optimizer_if_asked()
            # the step is applied: the counters follow at once, so that a state saved from here
            # on (a signal, an error while logging) resumes with the next batch
            self.step += 1
            batch_idx += 1
            self.start_batch = batch_idx
            TIMELINE.add("step", time.perf_counter() - computing)
            logging = time.perf_counter()
            now = time.time()
            duration = now - before
            self.step_times.append(now - (self.last_step_end or before))  # with the wait for data
            self.last_step_end = now
            loss_value = loss.item()
            self.loss_history.append(loss_value)
            bar.update()
            bar.set_postfix(loss=f"{loss_value:.4f}", ex_s=f"{opt.batch_size * self.world_size / duration:.1f}")
            if self.is_main:
                record = {"step": step, "epoch": self.epoch, "loss": loss_value, "lr": lr}
                if len(terms) > 1:
                    record["terms"] = {k: float(v.detach()) for k, v in terms.items()}
                if opt.skip_bad_items:
                    record["skipped_items"] = self.skipped_items
                self.logger.append_jsonl("train_steps.jsonl", record)
                if logs_at(batch_idx - 1, step, opt.log_frequency):
                    self.log_time(batch_idx - 1, duration, loss_value)
                    logs = dict(logs, **{f"terms/{k}": v.detach() for k, v in terms.items()})
                    self.log("train", inputs, outputs, loss, logs, step)
                    self.val(step)
            TIMELINE.add("logging", time.perf_counter() - logging)
            if opt.state_frequency and self.step % opt.state_frequency == 0:
                self.save_state()
            if self.done():
                bar.close()
                return batch_idx >= len(self.train_loader) + self.train_sampler.start_batch
            self._stop_if_asked()
            waiting = time.perf_counter()
        bar.close()
        return True

    def _finite(self, loss):
        finite = torch.isfinite(loss.detach()).float()
        if self.world_size > 1:  # every rank skips together
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def _skip_nonfinite(self, loss):
        self.nonfinite_in_row += 1
        self._print(f"-> step {self.step}: non-finite loss ({loss.item()}), step skipped "
                    f"({self.nonfinite_in_row} in a row)")
        if self.is_main:
            self.logger.scalars("train", {"nonfinite_skipped": self.nonfinite_in_row}, self.step)
        if self.nonfinite_in_row >= self.opt.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} non-finite losses in a row (--max_nonfinite "
                f"{self.opt.max_nonfinite}): lower --learning_rate, try --amp off, or check the data; "
                f"the last good state is in {self.state_dir}")

    # ------------------------------------------------------------------ validation
    def depth_metrics(self, depth, depth_gt):
        """Mean metrics of a batch under the validation protocol (per-image scaling unless
        the method's depth is metric)."""
        disp = (1 / depth.detach().float()).cpu()[:, 0].numpy()
        gt = depth_gt.cpu()[:, 0].numpy()
        scale = self.method.depth_scale
        sums, count = {}, 0
        for i in range(len(gt)):
            errors, _ = self.protocol.score(disp[i], gt[i], scale or 1.0, scale is None)
            if errors is None or not np.all(np.isfinite(errors)):  # no valid pixel, or a NaN metric
                continue
            for name, value in zip(DEPTH_METRIC_NAMES, errors):
                sums[name] = sums.get(name, 0.0) + value
            count += 1
        return sums, count

    def val(self, step):
        """One validation batch, no gradients (the reference's in-training check), logged at `step`."""
        self.method.eval()
        if self.val_iter is None:
            self.val_iter = iter(self.val_loader)
        try:
            inputs = next(self.val_iter)
        except StopIteration:
            self.val_iter = iter(self.val_loader)
            inputs = next(self.val_iter)
        with torch.no_grad():
            inputs, outputs, loss, terms, logs = self.process_batch(inputs, distributed=False,
                                                                    dataset=self.val_dataset)
            self.log("val", inputs, outputs, loss, logs, step)
        self.method.train()

    def validate_epoch(self):
        with TIMELINE.phase("validation"):
            return self._validate_epoch()

    def _validate_epoch(self):
        """Depth metrics over the whole validation split (rank 0) under its dataset's
        protocol, logged to TensorBoard and metrics.jsonl; the best epoch by --best_metric
        is kept as weights_best/."""
        if not self.is_main or not self.val_dataset.load_depth:
            return None
        opt = self.opt
        self.method.eval()
        self.method.predict_variants = False  # only "depth" is scored here
        started = time.time()
        sums, count = {}, 0
        try:
            with torch.no_grad():
                for inputs in tqdm(self._epoch_validation_loader(), desc=f"validate epoch {self.epoch}", unit="batch",
                                   leave=False,
                                   disable=opt.no_progress):
                    inputs = self._to_device(inputs, self.val_epoch_dataset)
                    with self.autocast():
                        prediction = self.method.predict(inputs)
                    batch_sums, n = self.depth_metrics(prediction["depth"], inputs["depth_gt"])
                    for k, v in batch_sums.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += n
                    if self.stop.requested:  # rank 0 alone validates: the others wait at the barrier
                        raise KeyboardInterrupt
        finally:
            self.method.train()
            self.method.predict_variants = True
        self.val_seconds = time.time() - started
        self.last_step_end = None  # the next step's time does not include the validation
        if not count:
            return None
        metrics = {k: v / count for k, v in sums.items()}
        self.logger.scalars("val", {f"epoch/{k}": v for k, v in metrics.items()}, self.epoch)
        record = {"epoch": self.epoch, "step": self.step, **metrics}
        self.logger.append_jsonl("metrics.jsonl", record)
        value = metrics.get(opt.best_metric)
        if value is not None:
            better = self.best is None or (value < self.best if opt.best_metric in LOWER_IS_BETTER else value > self.best)
            if better:
                self.best = value
                self.save_best()
                atomic_write_bytes(os.path.join(self.models_dir, "best.json"), json.dumps(record).encode())
        self._print(f"-> epoch {self.epoch} validation ({len(self.val_dataset)} items of {self.val_file}, "
                    f"{self.protocol.name} protocol): "
                    + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    # ------------------------------------------------------------------ logging
    def time_left(self):
        """Seconds to the end: the mean of the recent steps (data wait included) times the steps
        left, plus the last validation's duration times the validations left."""
        steps_left = max(self.num_total_steps - self.step - 1, 0)
        per_step = sum(self.step_times) / max(len(self.step_times), 1)
        epochs_left = max(self.opt.num_epochs - self.epoch, 0)  # this epoch's validation is still to come
        if self.opt.max_steps:
            epochs_left = min(epochs_left, -(-steps_left // max(len(self.train_loader), 1)))
        return per_step * steps_left + (self.val_seconds or 0.0) * epochs_left

    def log_time(self, batch_idx, duration, loss):
        elapsed = time.time() - self.start_time
        left = self.time_left()
        self.logger.console(self.epoch, batch_idx, self.opt.batch_size * self.world_size / duration, loss,
                            elapsed, left)

    def log(self, mode, inputs, outputs, loss, logs, step):
        scalars = {"loss": loss.detach(), "lr": self.optimizer.param_groups[0]["lr"]}
        if self.opt.skip_bad_items:
            scalars["data/skipped_items"] = self.skipped_items
        if len(self.optimizer.param_groups) > 1:
            scalars.update({f"lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)})
        scalars.update(logs)
        depth = self.method.train_depth(outputs)
        if "depth_gt" in inputs and depth is not None:
            sums, n = self.depth_metrics(depth, inputs["depth_gt"])
            scalars.update({f"{'de' if k in LOWER_IS_BETTER else 'da'}/{k}": v / n for k, v in sums.items()} if n else {})
        self.logger.scalars(mode, scalars, step)
        self.logger.images(mode, self.method.images_to_log(inputs, outputs, 4), step)

    # ------------------------------------------------------------------ weights and state
    def save_model(self, name=None):
        """Weight folder models/weights_<epoch> (or `name`) with its opt.json."""
        with TIMELINE.phase("saving"):
            return self._save_model(name)

    def _save_model(self, name=None):
        folder = checkpoints.save_weight_folder(self.method, self.optimizer,
                                                os.path.join(self.models_dir, name or f"weights_{self.epoch}"),
                                                self.opt)
        if name is None:
            self._saved_epoch = self.epoch
            self._weights_at_step = (self.step, folder)  # the state saved at this step links its files
            if self.opt.keep_weights > 0:
                checkpoints.prune_weight_folders(self.models_dir, self.opt.keep_weights,
                                                 protect=os.path.basename(folder))
            checkpoints.point_last(self.models_dir, os.path.basename(folder))
        return folder

    def save_best(self):
        """weights_best/: hard links to this epoch's weight folder when it was just written
        (no second copy on disk, and it survives the folder's pruning), else written anew."""
        epoch_folder = os.path.join(self.models_dir, f"weights_{self.epoch}")
        with TIMELINE.phase("saving"):
            if getattr(self, "_saved_epoch", None) == self.epoch and os.path.isdir(epoch_folder):
                return checkpoints.link_weight_folder(epoch_folder, os.path.join(self.models_dir, "weights_best"))
        return self.save_model("weights_best")

    def save_state(self):
        """Everything needed to continue exactly, written atomically (see checkpoints)."""
        with TIMELINE.phase("saving"):
            return self._save_state()

    def _save_state(self):
        if not self.is_main or getattr(self, "_saved_step", None) == (self.epoch, self.step):
            return None
        self._saved_step = (self.epoch, self.step)
        state = {"models": self.method.state_dict(), "method_state": self.method.extra_state(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": checkpoints.rng_state(), "epoch": self.epoch,
                 "step": self.step, "batch_in_epoch": self.start_batch, "best": self.best,
                 "epoch_end_done": self.epoch_end_done,
                 "nonfinite_in_row": self.nonfinite_in_row, "skipped_items": self.skipped_items,
                 "options": vars(self.opt)}
        step, folder = getattr(self, "_weights_at_step", None) or (None, None)
        linked = folder if step == self.step and os.path.isdir(folder) else None
        return checkpoints.save_state(self.state_dir, state, linked, checkpoints.ENCODER_INFO_KEYS)

    def _resume(self):
        state, path = checkpoints.load_latest_state(self.state_dir, self._print)
        saved_method = state.get("options", {}).get("method")
        if saved_method and saved_method != self.opt.method:
            raise SystemExit(f"--resume: {path} is a {saved_method} run, these options build {self.opt.method}")
        self.method.load_state_dict(state["models"])
        self.method.load_extra_state(state.get("method_state", {}))
        checkpoints.load_optimizer_state_dict(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoints.set_rng_state(state["rng"])
        self.epoch, self.step, self.start_batch = state["epoch"], state["step"], state["batch_in_epoch"]
        self.best, self.nonfinite_in_row = state["best"], state["nonfinite_in_row"]
        self.epoch_end_done = state.get("epoch_end_done", False)
        self.skipped_items = state.get("skipped_items", 0)
        self._print(f"-> Resumed from {path}: epoch {self.epoch}, step {self.step}, "
                    f"batch {self.start_batch} of the epoch")

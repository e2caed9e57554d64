"""The one training loop. It knows nothing about any paper: a method (methods/) turns a
batch into outputs and named loss terms; the Trainer sums the terms, steps the optimiser
and the schedule, and owns everything around that: single process or DDP (torchrun),
AMP, resumable state, per-epoch validation, logging and monodepth2-format weight folders.
"""
import contextlib
import json
import math
import os
import random
import shutil
import signal
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from datasets import DATASETS
from datasets.fast_loader import FastMonoDataset, decode_batch, device_augment, fast_collate
from evaluate_depth import batch_depth_metrics
from layers import disp_to_depth
from methods import build_method
from options import read_split_file, resolve_split_dir
from utils import atomic_torch_save, atomic_write_bytes, seed_everything, sec_to_hm_str

LOG_EVERY_STEP_UNTIL = 2000  # log at log_frequency early on, then every 2000 steps
LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log"}


class EpochSampler(Sampler):
    """Shuffled indices that depend on (seed, epoch) only, split over DDP ranks, and able to
    start part-way through an epoch (resume). Yields (index, epoch) pairs so that the
    dataset can derive each item's augmentation from them."""

    def __init__(self, n, batch_size, shuffle=True, seed=0, rank=0, world_size=1):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        self.per_rank = n // world_size

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order = order[self.rank:self.per_rank * self.world_size:self.world_size]
        for i in order[self.start_batch * self.batch_size:]:
            yield (i, self.epoch)

    def __len__(self):
        return self.per_rank - self.start_batch * self.batch_size


def distributed_context():
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


class NonFiniteLossError(RuntimeError):
    pass


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
        seed_everything(opt.seed)
        self.log_path = os.path.join(os.path.expanduser(opt.log_dir), opt.model_name)
        self.state_dir = os.path.join(self.log_path, "state")

        self.method = build_method(opt).to(self.device)
        if opt.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if opt.load_weights_folder and not opt.resume:
            loaded = self.method.load_weights(os.path.expanduser(opt.load_weights_folder), opt.models_to_load)
            self._print(f"-> Loaded {', '.join(loaded)} from {opt.load_weights_folder}")
        if opt.sync_bn and self.world_size > 1:
            if self.device.type != "cuda":
                raise SystemExit("--sync_bn needs CUDA devices (SyncBatchNorm has no CPU kernel)")
            self.method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        if opt.compile:
            for model in self.method.models.values():
                model.compile()
        self.model = self.method
        if self.world_size > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=getattr(self.method, "find_unused_parameters", False))

        self.optimizer = self._build_optimizer()
        if opt.load_weights_folder and not opt.resume:
            self._load_optimizer(os.path.expanduser(opt.load_weights_folder))
        self._build_loaders()
        self.scheduler = self._build_scheduler()
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opt.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=opt.amp == "fp16" and self.device.type == "cuda")
        self.writers = None
        self.step, self.epoch, self.start_batch = 0, 0, 0
        self.nonfinite_in_row = 0
        self.best = None
        self.loss_history = []
        if opt.resume:
            self._resume()
        self._print(f"Training model named: {opt.model_name}\n  models and logs in {self.log_path}\n"
                    f"  device: {self.device}, processes: {self.world_size}, batch per process: "
                    f"{opt.batch_size}\n  {len(self.train_dataset)} training items, "
                    f"{len(self.val_dataset)} validation items")

    # ------------------------------------------------------------------ set-up
    def _print(self, *args):
        if self.is_main:
            tqdm.write(" ".join(str(a) for a in args))

    def _set_determinism(self):
        if self.opt.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _build_optimizer(self):
        opt = self.opt
        params = self.method.parameters_to_train()
        kwargs = dict(lr=opt.learning_rate, weight_decay=opt.weight_decay)
        if self.device.type == "cuda" and not opt.deterministic:
            kwargs["fused"] = True
        cls = torch.optim.AdamW if opt.optimizer == "adamw" else torch.optim.Adam
        return cls(params, **kwargs)

    def _build_scheduler(self):
        """One LambdaLR over optimiser steps, built once (never rebuilt when parts are frozen
        later, which would reset the LR). step: x decay_rate every decay_step epochs;
        cosine: to eta_min over the run; optional linear warm-up."""
        opt = self.opt
        steps_per_epoch = max(len(self.train_loader), 1)
        total = steps_per_epoch * opt.num_epochs
        if opt.max_steps:
            total = min(total, opt.max_steps)
        decay_step = opt.decay_step or opt.scheduler_step_size

        def factor(step):
            f = 1.0
            if opt.lr_sche_type == "step":
                f = opt.decay_rate ** (step // steps_per_epoch // decay_step)
            else:
                t = min(step / max(total, 1), 1.0)
                floor = opt.eta_min / opt.learning_rate
                f = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
            if opt.warmup_steps and step < opt.warmup_steps:
                f *= (step + 1) / opt.warmup_steps
            return f
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def _make_dataset(self, names, is_train, split_file):
        opt = self.opt
        dataset = DATASETS[opt.dataset](opt.data_path, names, opt.height, opt.width, opt.frame_ids,
                                        len(opt.scales), is_train=is_train,
                                        img_ext=".png" if opt.png else ".jpg", split_file=split_file)
        dataset.seed = opt.seed
        if opt.use_depth_hints:
            dataset.depth_hint_path = opt.depth_hint_path or os.path.join(opt.data_path, "depth_hints")
        if opt.fast_loader:
            return FastMonoDataset(dataset, opt.cache_dir, encoded=opt.decode_on_device)
        return dataset

    def _build_loaders(self):
        opt = self.opt
        split_dir = resolve_split_dir(opt.split)
        train_file = os.path.join(split_dir, "train_files.txt")
        val_dir = resolve_split_dir(opt.val_split) if opt.val_split else split_dir
        val_file = os.path.join(val_dir, "val_files.txt")
        if os.path.basename(val_file) == "test_files.txt":
            raise SystemExit("--val_split must not be a test split")
        self.train_dataset = self._make_dataset(read_split_file(train_file), True, train_file)
        self.val_dataset = self._make_dataset(read_split_file(val_file), False, val_file)
        if len(self.train_dataset) < opt.batch_size * self.world_size:
            raise SystemExit(f"{train_file} has {len(self.train_dataset)} items, fewer than "
                             f"--batch_size {opt.batch_size} x {self.world_size} processes")
        workers = opt.num_workers
        # the loaders' own generator: creating an iterator must not draw from the global RNG,
        # or a resumed run's random stream would be shifted
        loader_rng = torch.Generator()
        loader_rng.manual_seed(opt.seed)
        common = dict(num_workers=workers, pin_memory=self.device.type == "cuda",
                      persistent_workers=workers > 0, generator=loader_rng, collate_fn=self.collate_fn)
        if workers > 0:
            common["prefetch_factor"] = 4 if opt.fast_loader else 2
        self.train_sampler = EpochSampler(len(self.train_dataset), opt.batch_size, True, opt.seed,
                                          self.rank, self.world_size)
        self.train_loader = DataLoader(self.train_dataset, opt.batch_size, sampler=self.train_sampler,
                                       drop_last=True, **common)
        val_batch = max(min(opt.batch_size, len(self.val_dataset)), 1)
        self.val_sampler = EpochSampler(len(self.val_dataset), val_batch, True, opt.seed + 1)
        self.val_loader = DataLoader(self.val_dataset, val_batch, sampler=self.val_sampler, drop_last=True, **common)
        self.val_iter = None

    @property
    def collate_fn(self):
        return fast_collate if self.opt.fast_loader else None

    def _to_device(self, inputs):
        out = {}
        for k, v in inputs.items():
            if isinstance(v, list):  # JPEG bytes: decode_batch reads them from host memory
                out[k] = v
                continue
            v = v.to(self.device, non_blocking=True)
            if self.opt.channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        if self.opt.fast_loader:
            if self.opt.decode_on_device:
                out = decode_batch(out, (self.opt.height, self.opt.width), self.device)
            out = device_augment(out, self.opt.frame_ids, len(self.opt.scales))
        return out

    # ------------------------------------------------------------------ loop
    def train(self):
        opt = self.opt
        self.start_time = time.time()
        self.num_total_steps = len(self.train_loader) * opt.num_epochs
        if opt.max_steps:
            self.num_total_steps = min(self.num_total_steps, opt.max_steps)
        if self.is_main:
            self.save_opts()
        previous = signal.getsignal(signal.SIGTERM)
        if self.is_main and hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            while self.epoch < opt.num_epochs and not self.done():
                finished = self.run_epoch()
                if finished:
                    self.method.on_epoch_end(self.epoch)
                    self.validate_epoch()
                    self._barrier()
                    if self.is_main and ((self.epoch + 1) % opt.save_frequency == 0 or self.done()
                                         or self.epoch + 1 == opt.num_epochs):
                        self.save_model()
                    self.epoch += 1
                    self.start_batch = 0
                    self.save_state()
                elif self.done():  # --max_steps reached inside an epoch
                    if self.is_main:
                        self.save_model()
                    self.save_state()
        except KeyboardInterrupt:
            self._print("-> interrupted: saving a resumable state (continue with --resume)")
            self.save_state()
            raise SystemExit(130)
        finally:
            if hasattr(signal, "SIGTERM") and self.is_main:
                signal.signal(signal.SIGTERM, previous)
            if self.writers:
                for w in self.writers.values():
                    w.close()
            if self.world_size > 1 and dist.is_initialized():
                self._barrier()
                dist.destroy_process_group()
        return self

    def _barrier(self):
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()

    def _on_sigterm(self, signum, frame):
        raise KeyboardInterrupt

    def done(self):
        return bool(self.opt.max_steps) and self.step >= self.opt.max_steps

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def process_batch(self, inputs, distributed=True):
        """distributed=False runs the bare method (rank-0-only work: no DDP collectives)."""
        inputs = self._to_device(inputs)
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
        self.train_sampler.set_epoch(self.epoch, self.start_batch)
        bar = tqdm(total=len(self.train_loader) + self.start_batch, initial=self.start_batch,
                   desc=f"epoch {self.epoch}", unit="batch", disable=opt.no_progress or not self.is_main,
                   dynamic_ncols=True)
        batch_idx = self.start_batch
        for inputs in self.train_loader:
            before = time.time()
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
            duration = time.time() - before
            self.loss_history.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", ex_s=f"{opt.batch_size * self.world_size / duration:.1f}")
            if self.is_main:
                self._log_step_line(loss)
                early = batch_idx % opt.log_frequency == 0 and self.step < LOG_EVERY_STEP_UNTIL
                if early or (self.step % LOG_EVERY_STEP_UNTIL == 0 and self.step > 0):
                    self.log_time(batch_idx, duration, loss.item())
                    logs = dict(logs, **{f"terms/{k}": v.detach() for k, v in terms.items()})
                    if "depth_gt" in inputs:
                        logs.update(batch_depth_metrics(outputs[("depth", 0, 0)].float(), inputs["depth_gt"]))
                    self.log("train", inputs, outputs, loss, logs)
                    self.val()
            self.method.on_step_end(self.step)
            self.step += 1
            batch_idx += 1
            self.start_batch = batch_idx
            if opt.state_frequency and self.step % opt.state_frequency == 0:
                self.save_state()
            if self.done():
                bar.close()
                return batch_idx >= len(self.train_loader) + self.train_sampler.start_batch
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
            self._writer("train").add_scalar("nonfinite_skipped", self.nonfinite_in_row, self.step)
        if self.nonfinite_in_row >= self.opt.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} non-finite losses in a row (--max_nonfinite "
                f"{self.opt.max_nonfinite}): lower --learning_rate, try --amp off, or check the data; "
                f"the last good state is in {self.state_dir}")

    def val(self):
        """One validation batch, no gradients (monodepth2's in-training check)."""
        self.method.eval()
        if self.val_iter is None:
            self.val_iter = iter(self.val_loader)
        try:
            inputs = next(self.val_iter)
        except StopIteration:
            self.val_iter = iter(self.val_loader)
            inputs = next(self.val_iter)
        with torch.no_grad():
            inputs, outputs, loss, terms, logs = self.process_batch(inputs, distributed=False)
            if "depth_gt" in inputs:
                logs.update(batch_depth_metrics(outputs[("depth", 0, 0)].float(), inputs["depth_gt"]))
            self.log("val", inputs, outputs, loss, logs)
        self.method.train()

    def validate_epoch(self):
        """Depth metrics over the whole validation split (rank 0), logged to TensorBoard and
        metrics.jsonl; the best epoch by --best_metric is kept as weights_best/."""
        if not self.is_main or not self.val_dataset.load_depth:
            return None
        opt = self.opt
        self.method.eval()
        sums, count = {}, 0
        loader = DataLoader(self.val_dataset, self.val_loader.batch_size, shuffle=False, collate_fn=self.collate_fn,
                            num_workers=0 if opt.num_workers == 0 else min(opt.num_workers, 4))
        with torch.no_grad():
            for inputs in loader:
                inputs = self._to_device(inputs)
                with self.autocast():
                    disp = self.method.predict_disp(inputs[("color", 0, 0)])
                _, depth = disp_to_depth(disp.float(), opt.min_depth, opt.max_depth)
                metrics = batch_depth_metrics(depth, inputs["depth_gt"])
                n = inputs["depth_gt"].shape[0]
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * n
                count += n
        self.method.train()
        if not count:
            return None
        metrics = {k.split("/")[1]: v / count for k, v in sums.items()}
        writer = self._writer("val")
        for k, v in metrics.items():
            writer.add_scalar(f"epoch/{k}", v, self.epoch)
        record = {"epoch": self.epoch, "step": self.step, **metrics}
        with open(os.path.join(self.log_path, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        value = metrics.get(opt.best_metric)
        if value is not None:
            better = self.best is None or (value < self.best if opt.best_metric in LOWER_IS_BETTER else value > self.best)
            if better:
                self.best = value
                self.save_model("weights_best")
                atomic_write_bytes(os.path.join(self.log_path, "models", "best.json"), json.dumps(record).encode())
        self._print(f"-> epoch {self.epoch} validation: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    # ------------------------------------------------------------------ logging
    def _writer(self, mode):
        if self.writers is None:
            from tensorboardX import SummaryWriter
            self.writers = {m: SummaryWriter(os.path.join(self.log_path, m)) for m in ("train", "val")}
        return self.writers[mode]

    def _log_step_line(self, loss):
        os.makedirs(self.log_path, exist_ok=True)
        with open(os.path.join(self.log_path, "train_steps.jsonl"), "a") as f:
            f.write(json.dumps({"step": self.step, "epoch": self.epoch, "loss": loss.item(),
                                "lr": self.optimizer.param_groups[0]["lr"]}) + "\n")

    def log_time(self, batch_idx, duration, loss):
        samples_per_sec = self.opt.batch_size * self.world_size / duration
        elapsed = time.time() - self.start_time
        left = (self.num_total_steps / max(self.step, 1) - 1.0) * elapsed if self.step > 0 else 0
        tqdm.write(f"epoch {self.epoch:>3} | batch {batch_idx:>6} | examples/s: {samples_per_sec:5.1f} | "
                   f"loss: {loss:.5f} | time elapsed: {sec_to_hm_str(elapsed)} | time left: {sec_to_hm_str(left)}")

    def log(self, mode, inputs, outputs, loss, logs):
        writer = self._writer(mode)
        writer.add_scalar("loss", float(loss.detach()), self.step)
        writer.add_scalar("lr", self.optimizer.param_groups[0]["lr"], self.step)
        for name, value in logs.items():
            writer.add_scalar(name, float(value), self.step)
        for name, image in self.method.images_to_log(inputs, outputs, 4).items():
            writer.add_image(name, image.detach().float().cpu().clamp(0, 1), self.step)

    # ------------------------------------------------------------------ weights and state
    def save_opts(self):
        models_dir = os.path.join(self.log_path, "models")
        os.makedirs(models_dir, exist_ok=True)
        atomic_write_bytes(os.path.join(models_dir, "opt.json"),
                           json.dumps(vars(self.opt), indent=2, default=str).encode())

    def save_model(self, name=None):
        """monodepth2 weight folder models/weights_<epoch> (or `name`), built in a temporary
        folder and renamed into place."""
        models_dir = os.path.join(self.log_path, "models")
        folder = os.path.join(models_dir, name or f"weights_{self.epoch}")
        tmp = folder + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.method.save_weights(tmp, {"height": self.opt.height, "width": self.opt.width,
                                       "use_stereo": self.opt.use_stereo})
        atomic_torch_save(self.optimizer.state_dict(), os.path.join(tmp, "adam.pth"))  # monodepth2 name
        old = folder + ".old"
        if os.path.isdir(folder):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
        if name is None and self.opt.keep_weights > 0:
            self._prune_weight_folders(models_dir)
        return folder

    def _prune_weight_folders(self, models_dir):
        """--keep_weights N: remove all but the newest N weights_<epoch> folders."""
        epochs = sorted(int(d[len("weights_"):]) for d in os.listdir(models_dir)
                        if d.startswith("weights_") and d[len("weights_"):].isdigit())
        for epoch in epochs[:-self.opt.keep_weights]:
            shutil.rmtree(os.path.join(models_dir, f"weights_{epoch}"), ignore_errors=True)

    def _rng_state(self):
        state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save_state(self):
        """Everything needed to continue exactly: state/last.pt, written atomically; the
        previous good state is kept as state/previous.pt."""
        if not self.is_main or getattr(self, "_saved_step", None) == (self.epoch, self.step):
            return None
        self._saved_step = (self.epoch, self.step)
        state = {"models": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "rng": self._rng_state(), "epoch": self.epoch, "step": self.step,
                 "batch_in_epoch": self.start_batch, "best": self.best,
                 "nonfinite_in_row": self.nonfinite_in_row, "options": vars(self.opt)}
        os.makedirs(self.state_dir, exist_ok=True)
        last = os.path.join(self.state_dir, "last.pt")
        incoming = os.path.join(self.state_dir, "incoming.pt")
        atomic_torch_save(state, incoming)  # complete on disk before the rotation
        if os.path.isfile(last):
            os.replace(last, os.path.join(self.state_dir, "previous.pt"))
        os.replace(incoming, last)
        return last

    def _load_state_file(self, path):
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            self._print(f"-> {path} is damaged or truncated ({type(e).__name__}: {e}); "
                        "falling back to the previous state")
            return None

    def _resume(self):
        state = None
        for name in ("incoming.pt", "last.pt", "previous.pt"):  # newest complete state first
            path = os.path.join(self.state_dir, name)
            if os.path.isfile(path):
                state = self._load_state_file(path)
                if state is not None:
                    break
        if state is None:
            raise SystemExit(f"--resume: no readable state in {self.state_dir} (start without --resume)")
        self.method.load_state_dict(state["models"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.epoch, self.step, self.start_batch = state["epoch"], state["step"], state["batch_in_epoch"]
        self.best, self.nonfinite_in_row = state["best"], state["nonfinite_in_row"]
        self._print(f"-> Resumed from {path}: epoch {self.epoch}, step {self.step}, "
                    f"batch {self.start_batch} of the epoch")

    def _load_optimizer(self, folder):
        path = os.path.join(folder, "adam.pth")
        if not os.path.isfile(path):
            self._print(f"-> {path} not found: the optimiser starts afresh")
            return
        try:
            self.optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except ValueError as e:
            self._print(f"-> {path} does not match these parameters ({e}): the optimiser starts afresh")
            return
        # the saved state carries the old learning rate; --learning_rate wins (a reference
        # bug let adam.pth silently override the 1e-5 of the high-resolution fine-tune)
        for group in self.optimizer.param_groups:
            group["lr"] = self.opt.learning_rate
            group["initial_lr"] = self.opt.learning_rate
        self._print(f"-> Loaded the optimiser state from {path}")

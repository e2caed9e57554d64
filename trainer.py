"""The one training loop. It knows nothing about any paper: a method (methods/) turns a
batch into outputs and named loss terms; the Trainer sums the terms, steps the optimiser
and the schedule, logs, and writes monodepth2-format weight folders."""
import json
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import DATASETS
from evaluate_depth import batch_depth_metrics
from methods import build_method
from options import read_split_file, resolve_split_dir
from utils import atomic_write_bytes, seed_everything, sec_to_hm_str

LR_DECAY = 0.1
LOG_EVERY_STEP_UNTIL = 2000  # log at log_frequency early on, then every 2000 steps


def _seed_worker(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    import random
    random.seed(seed)


class Trainer:
    def __init__(self, opt):
        self.opt = opt
        seed_everything(opt.seed)
        self.log_path = os.path.join(os.path.expanduser(opt.log_dir), opt.model_name)
        self.device = torch.device("cuda" if torch.cuda.is_available() and not opt.no_cuda else "cpu")
        self.method = build_method(opt).to(self.device)
        if opt.load_weights_folder:
            loaded = self.method.load_weights(os.path.expanduser(opt.load_weights_folder), opt.models_to_load)
            print(f"-> Loaded {', '.join(loaded)} from {opt.load_weights_folder}")
        self.optimizer = torch.optim.Adam(self.method.parameters_to_train(), opt.learning_rate)
        if opt.load_weights_folder:
            self._load_optimizer(os.path.expanduser(opt.load_weights_folder))
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, opt.scheduler_step_size, LR_DECAY)
        self._build_loaders()
        self.writers = None
        self.step = 0
        self.epoch = 0
        print(f"Training model named: {opt.model_name}\n  models and logs in {self.log_path}\n"
              f"  device: {self.device}\n  {len(self.train_dataset)} training items, "
              f"{len(self.val_dataset)} validation items")

    # ------------------------------------------------------------------ data
    def _build_loaders(self):
        opt = self.opt
        split_dir = resolve_split_dir(opt.split)
        train_file = os.path.join(split_dir, "train_files.txt")
        val_file = os.path.join(split_dir, "val_files.txt")
        train_names, val_names = read_split_file(train_file), read_split_file(val_file)
        dataset_cls = DATASETS[opt.dataset]
        ext = ".png" if opt.png else ".jpg"
        num_scales = len(opt.scales)
        self.train_dataset = dataset_cls(opt.data_path, train_names, opt.height, opt.width, opt.frame_ids,
                                         num_scales, is_train=True, img_ext=ext, split_file=train_file)
        self.val_dataset = dataset_cls(opt.data_path, val_names, opt.height, opt.width, opt.frame_ids,
                                       num_scales, is_train=False, img_ext=ext, split_file=val_file)
        if len(self.train_dataset) < opt.batch_size:
            raise SystemExit(f"{train_file} has {len(self.train_dataset)} items, fewer than "
                             f"--batch_size {opt.batch_size}")
        generator = torch.Generator()
        generator.manual_seed(opt.seed)
        common = dict(num_workers=opt.num_workers, pin_memory=self.device.type == "cuda",
                      drop_last=True, worker_init_fn=_seed_worker,
                      persistent_workers=opt.num_workers > 0)
        self.train_loader = DataLoader(self.train_dataset, opt.batch_size, shuffle=True,
                                       generator=generator, **common)
        val_batch = min(opt.batch_size, len(self.val_dataset))
        self.val_loader = DataLoader(self.val_dataset, max(val_batch, 1), shuffle=True, **common)
        self.val_iter = None

    def _to_device(self, inputs):
        return {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}

    # ------------------------------------------------------------------ loop
    def train(self):
        opt = self.opt
        self.start_time = time.time()
        self.num_total_steps = len(self.train_loader) * opt.num_epochs
        if opt.max_steps:
            self.num_total_steps = min(self.num_total_steps, opt.max_steps)
        self.save_opts()
        for self.epoch in range(self.epoch, opt.num_epochs):
            self.run_epoch()
            # stepped at the end of the epoch: the LR drops after scheduler_step_size epochs
            self.scheduler.step()
            if (self.epoch + 1) % opt.save_frequency == 0 or self.done():
                self.save_model()
            if self.done():
                break
        if self.writers:
            for w in self.writers.values():
                w.close()
        return self

    def done(self):
        return bool(self.opt.max_steps) and self.step >= self.opt.max_steps

    def process_batch(self, inputs):
        inputs = self._to_device(inputs)
        outputs = self.method(inputs)
        terms, logs = self.method.compute_losses(inputs, outputs)
        loss = sum(terms.values())
        return inputs, outputs, loss, terms, logs

    def run_epoch(self):
        opt = self.opt
        self.method.train()
        bar = tqdm(total=len(self.train_loader), desc=f"epoch {self.epoch}", unit="batch",
                   disable=opt.no_progress, dynamic_ncols=True)
        for batch_idx, inputs in enumerate(self.train_loader):
            before = time.time()
            inputs, outputs, loss, terms, logs = self.process_batch(inputs)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            duration = time.time() - before
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", ex_s=f"{opt.batch_size / duration:.1f}")
            early = batch_idx % opt.log_frequency == 0 and self.step < LOG_EVERY_STEP_UNTIL
            if early or (self.step % LOG_EVERY_STEP_UNTIL == 0 and self.step > 0):
                self.log_time(batch_idx, duration, loss.item())
                logs = dict(logs, **{f"terms/{k}": v.detach() for k, v in terms.items()})
                if "depth_gt" in inputs:
                    logs.update(batch_depth_metrics(outputs[("depth", 0, 0)], inputs["depth_gt"]))
                self.log("train", inputs, outputs, loss, logs)
                self.val()
            self.method.on_step_end(self.step)
            self.step += 1
            if self.done():
                break
        bar.close()
        self.method.on_epoch_end(self.epoch)

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
            inputs, outputs, loss, terms, logs = self.process_batch(inputs)
            if "depth_gt" in inputs:
                logs.update(batch_depth_metrics(outputs[("depth", 0, 0)], inputs["depth_gt"]))
            self.log("val", inputs, outputs, loss, logs)
        self.method.train()

    # ------------------------------------------------------------------ logging
    def _writer(self, mode):
        if self.writers is None:
            from tensorboardX import SummaryWriter
            self.writers = {m: SummaryWriter(os.path.join(self.log_path, m)) for m in ("train", "val")}
        return self.writers[mode]

    def log_time(self, batch_idx, duration, loss):
        samples_per_sec = self.opt.batch_size / duration
        elapsed = time.time() - self.start_time
        left = (self.num_total_steps / max(self.step, 1) - 1.0) * elapsed if self.step > 0 else 0
        tqdm.write(f"epoch {self.epoch:>3} | batch {batch_idx:>6} | examples/s: {samples_per_sec:5.1f} | "
                   f"loss: {loss:.5f} | time elapsed: {sec_to_hm_str(elapsed)} | time left: {sec_to_hm_str(left)}")

    def log(self, mode, inputs, outputs, loss, logs):
        writer = self._writer(mode)
        writer.add_scalar("loss", float(loss.detach()), self.step)
        for name, value in logs.items():
            writer.add_scalar(name, float(value), self.step)
        for name, image in self.method.images_to_log(inputs, outputs, 4).items():
            writer.add_image(name, image.detach().float().cpu().clamp(0, 1), self.step)

    # ------------------------------------------------------------------ checkpoints
    def save_opts(self):
        models_dir = os.path.join(self.log_path, "models")
        os.makedirs(models_dir, exist_ok=True)
        atomic_write_bytes(os.path.join(models_dir, "opt.json"),
                           json.dumps(vars(self.opt), indent=2, default=str).encode())

    def save_model(self):
        folder = os.path.join(self.log_path, "models", f"weights_{self.epoch}")
        self.method.save_weights(folder, {"height": self.opt.height, "width": self.opt.width,
                                          "use_stereo": self.opt.use_stereo})
        import io
        buffer = io.BytesIO()
        torch.save(self.optimizer.state_dict(), buffer)
        atomic_write_bytes(os.path.join(folder, "adam.pth"), buffer.getvalue())
        return folder

    def _load_optimizer(self, folder):
        path = os.path.join(folder, "adam.pth")
        if not os.path.isfile(path):
            print(f"-> {path} not found: Adam starts afresh")
            return
        try:
            self.optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except ValueError as e:
            print(f"-> {path} does not match these parameters ({e}): Adam starts afresh")
            return
        # the saved state carries the old learning rate; --learning_rate wins (a reference
        # bug let adam.pth silently override the 1e-5 of the high-resolution fine-tune)
        for group in self.optimizer.param_groups:
            group["lr"] = self.opt.learning_rate
            group["initial_lr"] = self.opt.learning_rate
        print(f"-> Loaded Adam state from {path}")

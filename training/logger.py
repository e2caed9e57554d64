"""Training logs: TensorBoard (train/ and val/ event files), one JSON line per step
(train_steps.jsonl) and per validated epoch (metrics.jsonl), and the console line."""
import json
import os

from tqdm import tqdm

from utils import sec_to_hm_str


class RunLogger:
    def __init__(self, log_path):
        self.log_path = log_path
        self.writers = None

    def writer(self, mode):
        if self.writers is None:
            from tensorboardX import SummaryWriter
            self.writers = {m: SummaryWriter(os.path.join(self.log_path, m)) for m in ("train", "val")}
        writer = self.writers[mode]
        self._check_alive(writer, mode)
        return writer

    def _check_alive(self, writer, mode):
        """tensorboardX writes events from a thread; when a write fails (a full disk) that thread
        ends, its queue fills, and the next event would block training forever: raise instead."""
        events = getattr(getattr(writer, "file_writer", None), "event_writer", None)
        worker = getattr(events, "_worker", None)
        if worker is not None and not getattr(events, "_closed", False) and not worker.is_alive():
            raise OSError(f"TensorBoard's event writer for {os.path.join(self.log_path, mode)} stopped "
                          "(a write failed: is the disk full?); free space, then continue with --resume")

    def scalars(self, mode, values, step):
        writer = self.writer(mode)
        for name, value in values.items():
            self._check_alive(writer, mode)
            writer.add_scalar(name, float(value), step)

    def images(self, mode, images, step):
        writer = self.writer(mode)
        for name, image in images.items():
            self._check_alive(writer, mode)
            writer.add_image(name, image.detach().float().cpu().clamp(0, 1), step)

    def append_jsonl(self, name, record):
        os.makedirs(self.log_path, exist_ok=True)
        with open(os.path.join(self.log_path, name), "a") as f:
            f.write(json.dumps(record) + "\n")

    @staticmethod
    def console(epoch, batch_idx, examples_per_sec, loss, elapsed, left):
        tqdm.write(f"epoch {epoch:>3} | batch {batch_idx:>6} | examples/s: {examples_per_sec:5.1f} | "
                   f"loss: {loss:.5f} | time elapsed: {sec_to_hm_str(elapsed)} | time left: {sec_to_hm_str(left)}")

    def close(self):
        if self.writers:
            for w in self.writers.values():
                w.close()

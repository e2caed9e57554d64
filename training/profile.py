"""Where a run's time goes: seconds per phase, accumulated with perf_counter (no device
synchronisation, so the CPU-side cost of each phase; on a GPU the waits for the device land
in the phase that waits). Always collected (a few clock reads per step); written to
<run>/profile.json with --profile, and printed by benchmarks/run_breakdown.py.

Phases: options (parsing and the option checks; the chosen method's module, and with it torch,
is imported there), imports (the launch to the trainer's import, a mark), datasets (construction and first-item
checks), cache (the fast path's image cache), networks (the method built and loaded),
optimiser, first_batch (workers started and the first batch read), data_wait (later steps'
wait for their batch), step (forward, backward, update, method hooks), logging,
validation, saving (weight folders and resumable states), and the total from launch.
"""
import json
import os
import time

# the process's launch: DEPTHKIT_LAUNCH_TIME (seconds since the epoch, set by a launcher that
# measures from outside), else the moment this module was imported
LAUNCH = float(os.environ.get("DEPTHKIT_LAUNCH_TIME", time.time()))


class Timeline:
    def __init__(self):
        self.seconds = {}
        self.counts = {}
        self.marks = {}

    def mark(self, name):
        """Seconds from the launch to now, under `name` (e.g. "imports")."""
        self.marks[name] = time.time() - LAUNCH

    def add(self, phase, seconds):
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.counts[phase] = self.counts.get(phase, 0) + 1

    def phase(self, name):
        return _Phase(self, name)

    def as_dict(self):
        out = {"since_launch": time.time() - LAUNCH, **self.marks}
        for name, value in self.seconds.items():
            out[name] = value
        out["counts"] = dict(self.counts)
        return out

    def write(self, path):
        from utils import atomic_write_bytes
        atomic_write_bytes(path, (json.dumps(self.as_dict(), indent=1) + "\n").encode())


class _Phase:
    def __init__(self, timeline, name):
        self.timeline, self.name = timeline, name

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timeline.add(self.name, time.perf_counter() - self.start)
        return False


TIMELINE = Timeline()  # the process's one timeline (train.py marks the imports, the Trainer the rest)

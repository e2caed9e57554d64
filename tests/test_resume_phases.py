"""Ctrl-C at any phase of training resumes exactly: the signal is sent from a hook at that
phase (data loading, forward, backward, the update, logging, validation, saving), the run
stops with a resumable state, `--resume` finishes it, and every logged loss and validation
equals an uninterrupted run's, with no step logged twice."""
import json
import os
import signal

import pytest

from options import MonodepthOptions
from tests.helpers.cli import small_split
from trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS_PER_EPOCH, EPOCHS = 3, 2


def _args(world, split, log_dir, *extra):
    return ["--data_path", world.out, "--split", split, "--png", "--height", "64", "--width", "192",
            "--weights_init", "scratch", "--batch_size", "2", "--num_epochs", str(EPOCHS), "--num_workers", "0",
            "--log_dir", str(log_dir), "--model_name", "m", "--log_frequency", "2", "--state_frequency", "0",
            "--keep_weights", "1", "--pose_model_type", "posecnn", "--deterministic", "--no_progress", "--no_cuda",
            *extra]


def _logs(log_dir):
    run = os.path.join(str(log_dir), "m")
    with open(os.path.join(run, "train_steps.jsonl")) as f:
        steps = [json.loads(line) for line in f.read().splitlines()]
    with open(os.path.join(run, "metrics.jsonl")) as f:
        epochs = [json.loads(line) for line in f.read().splitlines()]
    return steps, epochs


def _interrupt():
    os.kill(os.getpid(), signal.SIGINT)


def _arm(trainer, phase, at_step=1):
    """Send SIGINT once, from inside `phase` of step `at_step` (or of epoch 0's validation and
    saving)."""
    fired = {"done": False}

    def once(condition=True):
        if condition and not fired["done"]:
            fired["done"] = True
            _interrupt()

    if phase == "data":
        collate = trainer.train_loader.collate_fn

        def collate_and_signal(items):
            once(trainer.step == at_step)
            return collate(items)
        trainer.train_loader.collate_fn = collate_and_signal
    elif phase == "forward":
        trainer.method.models["encoder"].register_forward_pre_hook(
            lambda module, args: once(trainer.step == at_step and module.training))
    elif phase == "backward":
        param = next(trainer.method.models["depth"].parameters())
        param.register_hook(lambda grad: once(trainer.step == at_step))
    elif phase == "update":
        trainer.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: once(trainer.step == at_step))
    elif phase == "logging":
        append = trainer.logger.append_jsonl

        def append_and_signal(name, record):
            append(name, record)
            once(name == "train_steps.jsonl" and record["step"] == at_step)
        trainer.logger.append_jsonl = append_and_signal
    elif phase == "validation":
        predict = trainer.method.predict

        def predict_and_signal(inputs):
            once(not trainer.method.training)
            return predict(inputs)
        trainer.method.predict = predict_and_signal
    elif phase == "saving":
        save = trainer.save_model

        def save_and_signal(name=None):
            once()
            return save(name)
        trainer.save_model = save_and_signal
    return fired


# (phase, step at which it is interrupted): one run is stopped at each phase in turn and resumed
CHAIN = [("data", 0), ("forward", 1), ("backward", 2), ("validation", None), ("saving", None), ("update", 3),
         ("logging", 4)]


def test_signal_at_any_phase_resumes_to_the_same_losses(static_world, tmp_path):
    split = small_split(static_world, tmp_path / "split", 2 * STEPS_PER_EPOCH, 2)
    Trainer(MonodepthOptions().parse(_args(static_world, split, tmp_path / "ref"))).train()
    ref_steps, ref_epochs = _logs(tmp_path / "ref")
    run = tmp_path / "run"
    trainer = Trainer(MonodepthOptions().parse(_args(static_world, split, run)))
    for phase, step in CHAIN:
        fired = _arm(trainer, phase, step)
        with pytest.raises(SystemExit) as stop:
            trainer.train()
        assert stop.value.code == 130 and fired["done"], phase
        steps, _ = _logs(run) if os.path.isfile(run / "m" / "metrics.jsonl") else (_steps_only(run), None)
        assert [r["step"] for r in steps] == list(range(len(steps))), phase  # no step twice, none missing
        assert len(steps) == trainer.step, phase  # the state holds exactly the logged steps
        for got, want in zip(steps, ref_steps):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-6, abs=1e-8), (phase, got["step"])
        trainer = Trainer(MonodepthOptions().parse(_args(static_world, split, run, "--resume")))
    trainer.train()
    steps, epochs = _logs(run)
    assert [r["step"] for r in steps] == list(range(STEPS_PER_EPOCH * EPOCHS))
    for got, want in zip(steps, ref_steps):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6, abs=1e-8), got["step"]
        assert got["lr"] == want["lr"]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS))
    for got, want in zip(epochs, ref_epochs):
        assert got["abs_rel"] == pytest.approx(want["abs_rel"], rel=1e-6)


def _steps_only(log_dir):
    with open(os.path.join(str(log_dir), "m", "train_steps.jsonl")) as f:
        return [json.loads(line) for line in f.read().splitlines()]

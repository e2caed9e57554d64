"""The run logger: a TensorBoard writer whose thread died (a failed write) raises instead of
blocking training."""
import errno
import threading
import time

import pytest

from training.logger import RunLogger


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the killed thread
def test_a_dead_tensorboard_writer_raises_instead_of_hanging(tmp_path):
    logger = RunLogger(str(tmp_path))
    logger.scalars("train", {"loss": 1.0}, 0)  # a working writer
    events = logger.writers["train"].file_writer.event_writer

    def full_disk(*_):
        raise OSError(errno.ENOSPC, "No space left on device")
    events._ev_writer.write_event = full_disk
    logger.scalars("train", {"loss": 2.0}, 1)  # accepted into the queue; its write kills the thread
    deadline = time.time() + 20
    while events._worker.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert not events._worker.is_alive()
    outcome = {}

    def log_many():  # more events than the writer's queue holds: this blocked forever before
        try:
            logger.scalars("train", {f"x{i}": float(i) for i in range(50)}, 2)
        except OSError as e:
            outcome["error"] = str(e)
    thread = threading.Thread(target=log_many, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert "disk full" in outcome["error"] and "--resume" in outcome["error"] and str(tmp_path) in outcome["error"]
    # the val writer still works
    logger.scalars("val", {"loss": 1.0}, 0)

"""Shared fixtures: one small synthetic world per test session, the real KITTI sample."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHARED_SAMPLE = os.path.join(ROOT, "..", "shared", "data", "kitti_real_sample")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Two drives of 12 frames at KITTI resolution, moving objects and odometry tree."""
    from datasets import synthetic_world as sw
    out = str(tmp_path_factory.mktemp("world") / "kitti")
    cfg = sw.Config(out=out, drives=2, frames=12, seed=3, moving_objects=True, odometry=True,
                    jpg=True)
    sw.generate(cfg, progress=False)
    return cfg


@pytest.fixture(scope="session")
def static_world(tmp_path_factory):
    """A static world (no movers) at a small size for training tests."""
    from datasets import synthetic_world as sw
    out = str(tmp_path_factory.mktemp("static") / "kitti")
    cfg = sw.Config(out=out, drives=2, frames=10, seed=1, height=192, width=640)
    sw.generate(cfg, progress=False)
    return cfg


def require_shared(path, what):
    """Data from ../shared: CI always has it (a missing copy fails there); elsewhere the
    test is skipped with a reason."""
    if os.path.exists(path):
        return os.path.abspath(path)
    message = f"{what} ({os.path.relpath(path, ROOT)}) is not beside the project"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def real_sample():
    return require_shared(SHARED_SAMPLE, "the real KITTI sample")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    the machine's cores are shared."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

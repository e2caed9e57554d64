"""Alias of the synthetic_world package, kept so that `python -m datasets.synthetic_world
--out DIR ...` and `from datasets import synthetic_world` (with every public name of the
former module) keep working."""
import sys

from synthetic_world import Config, generate, intrinsics, main, validate, world_exists  # noqa: F401
from synthetic_world.calibration import *  # noqa: F401,F403
from synthetic_world.constants import *  # noqa: F401,F403
from synthetic_world.generate import *  # noqa: F401,F403
from synthetic_world.kitti_files import *  # noqa: F401,F403
from synthetic_world.raycast import *  # noqa: F401,F403
from synthetic_world.scene import *  # noqa: F401,F403
from synthetic_world.textures import *  # noqa: F401,F403

if __name__ == "__main__":
    sys.exit(main())

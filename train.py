"""Train a depth model: python train.py --model_name NAME [options] (see options.py)."""
import os
import sys

from training.profile import TIMELINE  # first: it notes the launch time (see training/profile.py)

from options import MonodepthOptions  # noqa: E402  (light: --help does not load the trainer)

if __name__ == "__main__":
    with TIMELINE.phase("options"):
        opt = MonodepthOptions().parse()
    from datasets.mono_dataset import ItemError
    from trainer import Trainer
    TIMELINE.mark("imports")
    try:
        Trainer(opt).train()
    except ItemError as e:  # a file of the split is missing or unreadable: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    # every file is written and closed and the loaders' workers are stopped: leave without the
    # interpreter's teardown of PyTorch's modules (about 1.8 s on a 2-core CPU)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

"""Train a depth model: python train.py --model_name NAME [options] (see options.py)."""
import sys

from training.profile import TIMELINE  # first: it notes the launch time (see training/profile.py)

from datasets.mono_dataset import ItemError  # noqa: E402
from options import MonodepthOptions  # noqa: E402
from trainer import Trainer  # noqa: E402

if __name__ == "__main__":
    TIMELINE.mark("imports")
    try:
        with TIMELINE.phase("options"):
            opt = MonodepthOptions().parse()
        Trainer(opt).train()
    except ItemError as e:  # a file of the split is missing or unreadable: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)

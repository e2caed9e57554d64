"""Train a depth model: python train.py --model_name NAME [options] (see options.py)."""
import sys

from datasets.mono_dataset import ItemError
from options import MonodepthOptions
from trainer import Trainer

if __name__ == "__main__":
    try:
        Trainer(MonodepthOptions().parse()).train()
    except ItemError as e:  # a file of the split is missing or unreadable: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)

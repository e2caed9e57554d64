"""Train a depth model: python train.py --model_name NAME [options] (see options.py)."""
from options import MonodepthOptions
from trainer import Trainer

if __name__ == "__main__":
    Trainer(MonodepthOptions().parse()).train()

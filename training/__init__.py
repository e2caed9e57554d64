"""What the Trainer (trainer.py) is built from: the epoch sampler and process context
(sampler.py), weight folders and the resumable training state (checkpoints.py), and
logging (logger.py)."""

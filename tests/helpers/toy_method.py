"""A method defined outside methods/, for tests/test_seams.py: a Monodepth2 subclass with
its own options, two parameter groups at different learning rates, and hooks that keep
state the resume state must carry. Selected with --method tests.helpers.toy_method."""
from methods.monodepth2 import Monodepth2


class ToyMethod(Monodepth2):
    @classmethod
    def add_options(cls, parser):
        g = parser.add_argument_group("toy method")
        g.add_argument("--toy_decoder_lr", type=float, default=3e-4, help="LR of the decoder and pose networks")
        g.add_argument("--toy_smoothness_scale", type=float, default=2.0, help="multiplies the smoothness term")

    def __init__(self, opt):
        super().__init__(opt)
        self.epochs_started, self.epochs_ended, self.steps_seen = [], [], 0

    def param_groups(self):
        encoder = [p for p in self.models["encoder"].parameters() if p.requires_grad]
        rest = [p for name, model in self.models.items() if name != "encoder"
                for p in model.parameters() if p.requires_grad]
        return [{"name": "encoder", "params": encoder, "lr": self.opt.learning_rate},
                {"name": "decoder_pose", "params": rest, "lr": self.opt.toy_decoder_lr}]

    def compute_losses(self, inputs, outputs):
        terms, logs = super().compute_losses(inputs, outputs)
        terms["smoothness"] = terms["smoothness"] * self.opt.toy_smoothness_scale
        return terms, logs

    def on_epoch_start(self, epoch, start_batch):
        self.epochs_started.append((epoch, start_batch))

    def on_epoch_end(self, epoch):
        self.epochs_ended.append(epoch)

    def on_train_step_end(self, step, inputs, outputs):
        assert ("depth", 0, 0) in outputs and ("color", 0, 0) in inputs
        self.steps_seen += 1

    def extra_state(self):
        return {"epochs_started": self.epochs_started, "epochs_ended": self.epochs_ended,
                "steps_seen": self.steps_seen}

    def load_extra_state(self, state):
        self.epochs_started = list(state["epochs_started"])
        self.epochs_ended = list(state["epochs_ended"])
        self.steps_seen = state["steps_seen"]


METHOD = ToyMethod

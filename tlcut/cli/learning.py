"""The accuracy verbs: train, retrain (with the TL), eval (through the runtime)."""

from __future__ import annotations

import json

from tlcut.cli import Verb, bar, say
from tlcut.cli.args import BackendArgs, BundleArgs, DataArgs, PlacementArgs


def add_recipe(p, recipe: dict) -> None:
    """The training recipe's flags; left out, each takes ``recipe``'s value."""
    p.add_argument("--epochs", type=int, help=f"epochs (default {recipe['epochs']})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {recipe['lr']:g})")
    p.add_argument("--schedule", choices=["cosine", "constant"], help=f"learning-rate schedule (default {recipe['schedule']})")
    p.add_argument("--warmup", type=int, help=f"epochs of linear warm-up before the cosine (default {recipe['warmup']})")
    p.add_argument("--weight-decay", type=float, help=f"AdamW decoupled weight decay, 0 for Adam (default {recipe['weight_decay']:g})")
    p.add_argument("--label-smoothing", type=float, help=f"(default {recipe['label_smoothing']:g})")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="train without flips, turns, tilt and exposure changes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, help="stop after this many epochs without better validation accuracy "
                   "(default: never; the best epoch's weights are kept either way)")


def recipe_of(a) -> dict:
    keys = ("epochs", "lr", "schedule", "warmup", "weight_decay", "label_smoothing", "augment", "balance")
    return {k: getattr(a, k, None) for k in keys}


class Train(Verb):
    """Train a baseline classifier on the data (CPU) and save it as a .keras model `tlcut export` takes."""

    name = "train"

    def make_groups(self):
        return [DataArgs()]

    def add(self, p):
        p.add_argument("model", nargs="?", default="InspectNet", help="architecture name or .keras file (default InspectNet)")
        p.add_argument("-o", "--output", required=True, help="the .keras file to write (a .json report goes beside it)")
        p.add_argument("--task", default="grade", choices=["grade", "binary"],
                       help="elpv: 4 defect grades, or functional/defective (default grade)")
        p.add_argument("--size", type=int, default=128, help="image size (default 128)")
        p.add_argument("--channels", type=int, default=1, choices=[1, 3], help="image channels (default 1)")
        p.add_argument("--seed", type=int, default=0, help="seed of the split and the training (default 0)")
        from tlcut.toolchain.train import RECIPE

        p.add_argument("--balance", choices=["none", "sqrt", "balanced"],
                       help=f"class weights in the loss: inverse frequency, its square root, or none (default {RECIPE['balance']})")
        add_recipe(p, RECIPE)

    def run(self, a):
        from tlcut.toolchain.train import train

        train(a.model, a.data or "elpv", a.output, size=a.size, channels=a.channels, task=a.task, batch=a.batch_size,
              seed=a.seed, patience=a.patience, limit=a.limit, say=say, **recipe_of(a))


class Retrain(Verb):
    """Insert a TL after a layer, fine-tune the TLModel, and split it into a bundle the runtime serves."""

    name = "retrain"

    def make_groups(self):
        return [DataArgs()]

    def add(self, p):
        p.add_argument("model", help=".keras model written by `tlcut train`")
        p.add_argument("--cut", required=True, metavar="LAYER", help="Keras layer after which the TL goes (see `tlcut cuts`)")
        p.add_argument("-o", "--output", required=True, help="bundle to write")
        p.add_argument("--force", action="store_true", help="replace an existing bundle")
        from tlcut import transfer
        from tlcut.toolchain.train import RETRAIN_RECIPE

        p.add_argument("--tl", default=transfer.DEFAULT, metavar="KIND",
                       help=f"the transfer layer to train at the cut: {transfer.SYNTAX}, C a number of channels "
                            f"(default {transfer.DEFAULT}, the paper's max-pool)")

        add_recipe(p, RETRAIN_RECIPE)

    def run(self, a):
        from tlcut.toolchain.train import retrain

        retrain(a.model, a.cut, a.output, tl=a.tl, data=a.data, batch=a.batch_size, patience=a.patience, limit=a.limit,
                force=a.force, say=say, **recipe_of(a))


class Eval(Verb):
    """Accuracy of the deployed halves of a placement, run through the device and edge runtime."""

    name = "eval"

    def make_groups(self):
        self.b = BundleArgs()
        self.pl, self.be = PlacementArgs(self.b), BackendArgs()
        return [self.b, self.pl, self.be, DataArgs()]

    def add(self, p):
        p.add_argument("--split", default="test", choices=["test", "val", "train"])
        p.add_argument("--json", action="store_true")

    def run(self, a):
        from tlcut.toolchain.eval import evaluate

        b = self.b.bundle
        r = evaluate(b, self.pl.placement, data=a.data, split=a.split, limit=a.limit, progress=bar("eval", "img"),
                     backend=self.be.backend, precision=self.be.precision)
        if a.json:
            print(json.dumps(r, indent=1))
        else:
            print(f"{b.name} {r['placement']['label']} ({r['precision']}, {r['backend']}): accuracy {r['accuracy']:.4f} "
                  f"on {r['n']} {r['split']} images; payload {r['payload_bytes']} B")


VERBS = [Train, Retrain, Eval]

"""`tlcut fidelity`: a file of its own so the pipeline verbs' file stays under the size limit."""

from __future__ import annotations

from tlcut.cli import Verb, bar, emit_json
from tlcut.cli.args import BundleArgs
from tlcut.errors import TlcutError
from tlcut.placement import TL_CHOICES


class Fidelity(Verb):
    """Measure how each precision and wire encoding agrees with the float32 model, on real images.

For each cut with compiled halves (with and without the TL), device only and edge only, each
precision the bundle has, each wire encoding and each --engines backend: max relative error,
cosine and top-1 agreement of the output (the logits, where it ends in a Softmax) against the
float32 model on ONNX Runtime, over N images never used for calibration, without labels. Recorded
in the bundle's manifest for `tlcut plan`; a model whose output does not move with its input is
recorded as unknown."""

    name = "fidelity"

    def make_groups(self):
        self.b = BundleArgs()
        return [self.b]

    def add(self, p):
        p.add_argument("--cuts", help="cuts: indices, ranges, names or 'all' (default: every cut with halves)")
        p.add_argument("--tl", default="both", help="halves with the TL, without, or both (default both)")
        p.add_argument("--encodings", metavar="E,E", help="wire encodings to measure (default: every one that applies)")
        p.add_argument("--engines", default="onnxrt", metavar="B,B", help="backends to run on (default onnxrt)")
        p.add_argument("--precisions", metavar="P,P", help="precisions (default: every one the bundle has)")
        p.add_argument("--images", metavar="DIR", help="a folder of images, or 'elpv' (its test split; the default)")
        p.add_argument("-n", "--count", default="32", metavar="N", help="images to compare on (default 32)")
        p.add_argument("--jpeg-quality", default="90", metavar="Q[,Q...]", help="JPEG qualities (default 90)")
        p.add_argument("--json", action="store_true", help="print the rows recorded as JSON")

    def run(self, a):
        from tlcut.toolchain.compile import select_cuts
        from tlcut.toolchain.fidelity import describe, measure

        def ints(flag, text):
            try:
                return [int(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise TlcutError(f"{flag} takes whole numbers separated by commas, got '{text}'") from None

        words = lambda text: [v.strip() for v in text.split(",") if v.strip()] if text else None
        if a.tl not in TL_CHOICES:
            raise TlcutError(f"--tl must be one of {', '.join(TL_CHOICES)}, got '{a.tl}'")
        count = ints("-n", a.count)
        if len(count) != 1:
            raise TlcutError(f"-n takes one whole number of images, got '{a.count}'")
        b = self.b.bundle
        rows = measure(b, cuts=select_cuts(b, a.cuts) if a.cuts else None, tl=a.tl, engines=words(a.engines),
                       precisions=words(a.precisions), wire=words(a.encodings), images=a.images, count=count[0],
                       jpeg_quality=ints("--jpeg-quality", a.jpeg_quality), progress=bar("fidelity", "step"))
        if a.json:
            emit_json(rows)
        else:
            print("\n".join(describe(r) for r in rows))


VERBS = [Fidelity]

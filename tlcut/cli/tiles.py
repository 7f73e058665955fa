"""`tlcut tiles`: the segment between two cuts as horizontal bands, one ONNX file per node."""

from __future__ import annotations

from tlcut.cli import Verb, say
from tlcut.cli.args import BundleArgs


class Tiles(Verb):
    """Split the layers between two cuts into horizontal bands (halo rows included) for several nodes.

Every layer between --from and --to must be spatially local (convolutions, pooling that is not
global, batch norm, activations, Add, Mul, Concat, Pad, integer upsampling); band heights follow
--weights, the nodes' relative speeds. Writes DIR/band<i>.onnx and DIR/tiles.json (rows, halos, bytes, work shares)."""

    name = "tiles"

    def make_groups(self):
        self.b = BundleArgs()
        return [self.b]

    def add(self, p):
        p.add_argument("--from", dest="from_cut", required=True, metavar="CUT", help="cut where the segment starts")
        p.add_argument("--to", dest="to_cut", required=True, metavar="CUT", help="cut where the segment ends")
        p.add_argument("--bands", type=int, default=None, metavar="N", help="number of bands (default 2, or one per weight)")
        p.add_argument("--weights", metavar="W,W,...", help="relative speed of each band's node (default all equal)")
        p.add_argument("-o", "--output", required=True, metavar="DIR", help="tiles folder to write")
        p.add_argument("--force", action="store_true", help="replace an existing DIR")

    def run(self, a):
        from tlcut.toolchain.tiles import parse_weights, write_tiles

        weights = parse_weights(a.weights, a.bands)
        tiles = write_tiles(self.b.bundle, a.from_cut, a.to_cut, weights, a.output, force=a.force, progress=say)
        for row in tiles["bands"]:
            print(f"band {row['index']}: out rows {row['out_rows'][0]}-{row['out_rows'][1]}  in rows "
                  f"{row['in_rows'][0]}-{row['in_rows'][1]}  halo {row['halo_top']}+{row['halo_bottom']}  "
                  f"work {row['work_fraction']:.1%}")
        say(f"[tiles] wrote {a.output}")


VERBS = [Tiles]

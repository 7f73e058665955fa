"""JPEG codecs for the wire's encoding 4: which library the device encodes and the Python edge
decodes with (tlcut/encodings/jpeg.py uses simplejpeg; this is why).

    python benchmarks/codecs.py [--images 100] [--passes 5]

ELPV solar cells (the embedded data set) at 224x224 RGB, as a camera on the device would hand them
over, at JPEG qualities 75 and 90. Per library (Pillow, simplejpeg, OpenCV, each only where it
imports): encode time (RGB uint8 in, JPEG bytes out, 4:4:4 chroma as tlcut/encodings/jpeg.py sends),
decode time (the same bytes for every library: simplejpeg's, what crosses the wire; RGB uint8 out),
the JPEG sizes, and whether its decoded pixels equal simplejpeg's (the C edge's TurboJPEG decodes
to simplejpeg's pixels: tests/vectors/behaviour.json). Libraries are timed round-robin per image,
so a noisy moment hits all alike. Writes benchmarks/results/codecs.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tlcut.toolchain.bench import cpu_model

HERE = Path(__file__).resolve().parent
QUALITIES = (75, 90)


def codecs() -> dict:
    """name -> (version, encode(rgb, q) -> bytes, decode(bytes) -> rgb), for what imports."""
    out = {}
    try:
        from PIL import Image

        import PIL

        def pil_enc(img, q):
            b = io.BytesIO()
            Image.fromarray(img).save(b, "JPEG", quality=q, subsampling=0)
            return b.getvalue()

        def pil_dec(data):
            im = Image.open(io.BytesIO(data))
            im.load()
            return np.asarray(im.convert("RGB"))

        out["Pillow"] = (PIL.__version__, pil_enc, pil_dec)
    except ImportError:
        pass
    try:
        import simplejpeg

        out["simplejpeg"] = (simplejpeg.__version__, lambda img, q: simplejpeg.encode_jpeg(img, q, colorsubsampling="444"),
                             lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB"))
    except ImportError:
        pass
    try:
        import cv2

        params = [cv2.IMWRITE_JPEG_QUALITY, 0]
        if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)

        def cv_enc(img, q):
            p = list(params)
            p[1] = q
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), p)  # OpenCV encodes BGR
            return buf.tobytes()

        def cv_dec(data):
            a = np.frombuffer(data, np.uint8)
            if rgb_flag is not None:
                return cv2.imdecode(a, rgb_flag)
            return cv2.cvtColor(cv2.imdecode(a, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

        out["OpenCV"] = (cv2.__version__, cv_enc, cv_dec)
    except ImportError:
        pass
    return out


def ms(values) -> dict:
    a = np.asarray(values, np.float64) * 1e3
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90)),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100, help="ELPV cells to use")
    ap.add_argument("--passes", type=int, default=5, help="timed passes over the images")
    ap.add_argument("--out", default=str(HERE / "results" / "codecs"))
    args = ap.parse_args(argv)

    from tlcut.models import datasets

    d = datasets.load("elpv", size=224, channels=3, limit=args.images)
    images = [np.ascontiguousarray(im) for split in (d.train, d.val, d.test) for im in split.x][:args.images]
    assert images[0].shape == (224, 224, 3) and images[0].dtype == np.uint8, images[0].shape
    libs = codecs()
    if "simplejpeg" not in libs:
        print("simplejpeg is not installed (pip install simplejpeg): it is the reference here", file=sys.stderr)
        return 2
    rows = []
    for q in QUALITIES:
        wire = [libs["simplejpeg"][1](im, q) for im in images]  # what crosses: every decoder gets these bytes
        ref = [libs["simplejpeg"][2](b) for b in wire]
        enc = {n: [] for n in libs}
        dec = {n: [] for n in libs}
        sizes = {n: [] for n in libs}
        equal = {n: True for n in libs}
        for name, (_, e, dfn) in libs.items():  # warm-up, sizes and pixel agreement, untimed
            for im, b, r in zip(images, wire, ref):
                sizes[name].append(len(e(im, q)))
                equal[name] &= bool(np.array_equal(dfn(b), r))
        for _ in range(args.passes):
            for im, b in zip(images, wire):
                for name, (_, e, dfn) in libs.items():
                    t0 = time.perf_counter()
                    e(im, q)
                    t1 = time.perf_counter()
                    dfn(b)
                    t2 = time.perf_counter()
                    enc[name].append(t1 - t0)
                    dec[name].append(t2 - t1)
        for name in libs:
            s = np.asarray(sizes[name])
            rows.append({"library": name, "version": libs[name][0], "quality": q, "encode_ms": ms(enc[name]),
                         "decode_ms": ms(dec[name]), "bytes": {"median": int(np.median(s)), "min": int(s.min()),
                                                               "max": int(s.max())},
                         "decodes_like_simplejpeg": equal[name]})
            print(f"q{q} {name:10s} encode {rows[-1]['encode_ms']['median']:.3f} ms, decode "
                  f"{rows[-1]['decode_ms']['median']:.3f} ms, {rows[-1]['bytes']['median']} B", file=sys.stderr)
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/codecs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(),
                       "python": platform.python_version(), "numpy": np.__version__},
           "images": {"source": d.info.get("source", "elpv"), "count": len(images), "shape": [224, 224, 3],
                      "passes": args.passes},
           "libraries": {n: v for n, (v, _, _) in libs.items()}, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# JPEG codecs for the wire (encoding 4)", "",
             f"Command: `{res['command'].strip()}`  ",
             f"Date: {res['date']}  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, numpy {m['numpy']}  ",
             "Libraries: " + ", ".join(f"{n} {v}" for n, v in res["libraries"].items()), "",
             f"{res['images']['count']} ELPV solar cells at 224x224 RGB (uint8), {res['images']['passes']} timed passes, "
             "libraries round-robin per image. Encode: RGB in, JPEG out, 4:4:4 chroma (as tlcut/encodings/jpeg.py sends; "
             "OpenCV's time includes its RGB-to-BGR conversion). Decode: every library decodes the same bytes "
             "(simplejpeg's, what crosses the wire) to RGB. Times in ms: median (p10..p90); sizes in bytes: "
             "median (min..max), each library's own encoding.", "",
             "| quality | library | encode ms | decode ms | JPEG bytes | decodes to simplejpeg's pixels |",
             "|---:|---|---:|---:|---:|---|"]
    for r in res["rows"]:
        e, d, b = r["encode_ms"], r["decode_ms"], r["bytes"]
        lines.append(f"| {r['quality']} | {r['library']} {r['version']} | {e['median']:.3f} ({e['p10']:.3f}..{e['p90']:.3f}) | "
                     f"{d['median']:.3f} ({d['p10']:.3f}..{d['p90']:.3f}) | {b['median']} ({b['min']}..{b['max']}) | "
                     f"{'yes' if r['decodes_like_simplejpeg'] else 'no'} |")
    best = {q: min((r for r in res["rows"] if r["quality"] == q), key=lambda r: r["decode_ms"]["median"])["library"]
            for q in QUALITIES}
    lines += ["", "Fastest decoder (what the Python edge pays per JPEG request): "
              + ", ".join(f"q{q} {n}" for q, n in best.items()) + ". The raw image is 150528 bytes."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

"""Load, faults, bad input and security of the device-edge link, on the testbed (root); the
scenarios are tlcut.lab.reliability's, and this writes their results file.

    python benchmarks/reliability.py            # writes benchmarks/results/reliability.{json,md}
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tlcut.lab.reliability import MARKER, make_bundle, run_all

HERE = Path(__file__).resolve().parent


def to_markdown(r: dict) -> str:
    md = ["# Reliability and security of the link", "", "Command: `python benchmarks/reliability.py`  ", f"Date: {r['date']}", ""]
    if "load" in r:
        L = r["load"]
        t = r["testbed"]
        md += [f"Testbed: uplink {t['bandwidth_mbps']} Mbit/s, {t['latency_ms']} ms ({t['latency_method']}); CURVE on; "
               "device not throttled (these tests are about the link). Small residual model, cut 0 (16 KiB).", "",
               "## Load", "",
               f"{L['devices']} devices x {L['requests_per_device']} requests: {L['ok']} correct results from the edge, "
               f"{L['wrong']} wrong, {L['failed']} failed, {L['fell_back']} ran locally; every request accounted for: "
               f"{L['accounted']}. Throughput {L['throughput_rps']:.1f} req/s; latency median {L['latency_ms']['median']:.1f} ms, "
               f"p99 {L['latency_ms']['p99']:.1f} ms. Edge resident memory {L['edge_rss_kib']['before']} KiB before, "
               f"{L['edge_rss_kib']['max']} KiB at most during the run ({L['edge_rss_kib']['samples']} samples).", "",
               "## Faults (2 devices, 150 requests each, one every 40 ms; 1 s per attempt, 2 retries, fallback on)", "",
               "| fault | correct from edge | ran locally (fell back) | failed | wrong | retried | late replies dropped | back on the edge at the end |",
               "|---|---:|---:|---:|---:|---:|---:|---|"]
        for f in r["faults"]:
            md.append(f"| {f['scenario']} | {f['ok']} | {f['fell_back']} | {f['failed']} | {f['wrong']} | {f['retried']} | "
                      f"{f['dropped_late_replies']} | {f['back_on_edge_at_end']} |")
        s = r["security"]
        md += ["", "## Security", "",
               f"- A device whose key is not in the edge's allow-list: {s['unlisted_key']} (no reply, no data).",
               f"- Capture of the veth while a tensor holding the 16-byte marker `{MARKER.decode()}` crossed: "
               f"with CURVE {s['curve']['captured_bytes']} bytes captured, marker found: {s['curve']['marker_found']}; "
               f"plain TCP (control) {s['plain']['captured_bytes']} bytes, marker found: {s['plain']['marker_found']}.", ""]
    else:
        md += [f"Testbed scenarios not run: {r.get('skipped')}", ""]
    cb = {b["case"]: b for b in (r.get("bad_input_c") or [])}
    md += ["## Malformed frames against the Python edge and the C edge (tlcut-edged)", "",
           "Each is sent on its own connection; then a fresh device sends a valid request.", "",
           "| frame | Python: reply, error | counted | still serving | C: reply, error | counted | still serving |",
           "|---|---|---|---|---|---|---|"]
    for b in r["bad_input"]:
        c = cb.get(b["case"])
        cpart = f"{c['reply']}, {c['error']} | {c['counted']} | {c['still_serving']}" if c else "not built | | "
        md.append(f"| {b['case']} | {b['reply']}, {b['error']} | {b['counted']} | {b['still_serving']} | {cpart} |")
    return "\n".join(md) + "\n"


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="tlcut-rel-"))
    make_bundle(root)
    r = run_all(root)
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(r, indent=1) + "\n")
    md = to_markdown(r)
    (out / "reliability.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

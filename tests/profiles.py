"""Hand-made bench profiles for planner tests, where every figure is chosen so the answer is known: a
version 1 profile (one engine configuration), and ``engines`` for a version 2 one of several."""

from tlcut.toolchain import bench


def st(ms):
    return {"median": ms, "p90": ms, "p99": ms, "mean": ms, "min": ms, "max": ms, "n": 1}


def profile(role, head, tail, sizes, tl_ok, full, tl_ms=0.5, ser=0.01, sha="abc"):
    cuts = []
    for i, (h, t, nbytes, ok) in enumerate(zip(head, tail, sizes, tl_ok)):
        c = {"index": i, "tensor": f"t{i}", "layer": f"l{i}", "bytes": nbytes, "tl": ok,
             "tl_bytes": nbytes // 4 if ok else nbytes, "head": st(h), "tail": st(t),
             "serialize": st(ser), "deserialize": st(ser)}
        if ok:
            c.update(device_tl=st(tl_ms), edge_tl=st(tl_ms), serialize_tl=st(ser), deserialize_tl=st(ser))
        cuts.append(c)
    return {"format": bench.FORMAT, "version": 1, "role": role, "model": "m", "model_sha256": sha,
            "full": st(full), "cuts": cuts, "_path": f"{role}.json",
            "input": {"bytes": 600_000, "serialize": st(ser), "deserialize": st(ser)},
            "output": {"bytes": 4000, "serialize": st(ser), "deserialize": st(ser)}}


def engines(role, configs, sha="abc"):
    """A version 2 profile of several engine configurations: ``configs`` maps an Engine to a version
    1 profile's body (``profile(...)``); an int8 one may list only some of the cuts."""
    from tlcut.toolchain.profile import Config, Profile

    return Profile(role, "m", sha, max(len(p["cuts"]) for p in configs.values()),
                   [Config(e, p) for e, p in configs.items()], {}, f"{role}.json")

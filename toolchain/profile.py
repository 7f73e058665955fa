"""The profile `tlcut bench` writes and `tlcut plan` reads: one role's figures, per engine configuration.

Version 2 holds a list of configurations (backend x precision x threads), each what a version 1
profile held for the one configuration it measured: the whole model, every cut's head and tail,
TL and wire costs, the real-halves check. Version 1 files read as a profile of one configuration
(the backend it names, at float32). The per-cut figures stay the JSON bench wrote (``figures``):
the plan's arithmetic reads them by cut index; this module owns what identifies them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tlcut.deployment import Engine
from tlcut.errors import TlcutError
from tlcut.runtime import backends

FORMAT = "tlcut-profile"
VERSION = 2
#: Versions this tlcut reads: 1 held one configuration at its top level.
READS = (1, 2)


@dataclass
class Config:
    """One engine configuration's figures: a version 1 profile's body. An int8 configuration lists
    only the cuts that have int8 halves (``figures["cuts"]``), and ``full`` is None without an int8
    whole model."""

    engine: Engine
    figures: dict

    @property
    def cuts(self) -> dict[int, dict]:
        """Cut index -> its row: the cuts this configuration can run."""
        return {c["index"]: c for c in self.figures["cuts"]}

    @property
    def full(self) -> dict | None:
        return self.figures.get("full")

    def to_json(self) -> dict:
        return {**self.figures, "engine": self.engine.to_json()}


def _is_default(e: Engine) -> bool:
    return e.backend in (None, backends.DEFAULT) and e.precision in (None, "float32")


@dataclass
class Profile:
    role: str
    model: str
    model_sha256: str
    cut_count: int
    configs: list[Config]
    meta: dict = field(default_factory=dict)  # created, tlcut_version, machine, settings, bench_seconds
    path: str | None = None

    @property
    def default(self) -> Config:
        """The configuration a single-engine reader (three tiers, tiles) plans with: the default
        backend at float32, else the first float32 one with every cut, else the first."""
        whole = [c for c in self.configs if len(c.figures["cuts"]) == self.cut_count]
        return next((c for c in whole if _is_default(c.engine)),
                    next((c for c in whole if c.engine.precision in (None, "float32")), (whole or self.configs)[0]))

    @property
    def engines(self) -> list[Engine]:
        return [c.engine for c in self.configs]

    def __getitem__(self, key):
        """Read as a version 1 profile: the default configuration's fields (for readers of one engine)."""
        if key in self.meta:
            return self.meta[key]
        return {**self.default.figures, "_path": self.path}[key]

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "role": self.role, "model": self.model,
                "model_sha256": self.model_sha256, "cut_count": self.cut_count, **self.meta,
                "configurations": [c.to_json() for c in self.configs]}

    @classmethod
    def from_json(cls, d: dict, path=None) -> "Profile":
        if d.get("version") == 1:
            eng = Engine(d.get("backend"), "float32", (d.get("machine") or {}).get("threads"))
            meta = {k: d[k] for k in ("created", "tlcut_version", "machine", "settings", "bench_seconds") if k in d}
            return cls(d["role"], d["model"], d["model_sha256"], len(d["cuts"]), [Config(eng, d)], meta,
                       path or d.get("_path"))
        configs = [Config(Engine.from_json(c["engine"]), {k: v for k, v in c.items() if k != "engine"})
                   for c in d["configurations"]]
        meta = {k: v for k, v in d.items() if k not in ("format", "version", "role", "model", "model_sha256",
                                                         "cut_count", "configurations")}
        return cls(d["role"], d["model"], d["model_sha256"], d["cut_count"], configs, meta, path)

    def save(self, path) -> None:
        from tlcut.bundle import write_json_atomic

        write_json_atomic(Path(path), self.to_json())

    @classmethod
    def load(cls, path, role: str) -> "Profile":
        how = f"make it with `tlcut bench BUNDLE --role {role} -o {path}`"
        try:
            d = json.loads(Path(path).read_text())
        except OSError as e:
            raise TlcutError(f"cannot read profile '{path}': {e.strerror}; {how}") from None
        except ValueError:
            raise TlcutError(f"profile '{path}' is not JSON; {how}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise TlcutError(f"'{path}' is not a tlcut profile; {how}")
        if d.get("version") not in READS:
            raise TlcutError(f"profile '{path}' has version {d.get('version')}, this tlcut reads "
                             f"{', '.join(map(str, READS))}; bench again")
        if d.get("role") != role:
            raise TlcutError(f"profile '{path}' was measured as the {d.get('role')}, but is given as --{role}")
        try:
            return cls.from_json(d, str(path))
        except (KeyError, TypeError, IndexError):
            raise TlcutError(f"profile '{path}' is incomplete; {how}") from None


def as_profile(p, role: str | None = None) -> Profile:
    """A Profile, from a Profile or a profile's JSON (version 1 or 2, as bench returns it)."""
    if isinstance(p, Profile):
        return p
    prof = Profile.from_json(p, p.get("_path"))
    if role and prof.role != role:
        raise TlcutError(f"profile '{prof.path}' was measured as the {prof.role}, but is given as the {role}")
    return prof

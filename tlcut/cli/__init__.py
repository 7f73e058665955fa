"""The `tlcut` command: one verb per pipeline step.

A verb is a small class: its docstring is its --help, ``groups`` lists the shared flag groups it
takes (tlcut/cli/args.py), ``add`` its own flags and ``run`` the work. Heavy libraries are imported
inside ``run``, so `tlcut --help` and the ONNX-only verbs never import TensorFlow. A ``TlcutError``
ends the command with one line on stderr and exit code 2; any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tlcut.errors import TlcutError


class Verb:
    name = ""
    groups: tuple = ()

    def __init__(self):
        self.groups = self.make_groups()

    def make_groups(self) -> list:
        return []

    def add(self, p) -> None:
        """The verb's own flags."""

    def run(self, a) -> int:
        raise NotImplementedError

    def __call__(self, a) -> int:
        for g in self.groups:
            g.parse(a)
        return self.run(a) or 0


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit_json(obj, path: str | None = None) -> None:
    """Print ``obj`` as JSON, or write it atomically to ``path``."""
    if path and path != "-":
        from tlcut.bundle import write_json_atomic

        write_json_atomic(Path(path), obj)
    else:
        print(json.dumps(obj, indent=1))


def bar(desc: str, unit: str):
    """A progress bar on a terminal, nothing in a log."""

    def wrap(items):
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=None)

    return wrap


VERBOSE_HELP = "show what libraries print (TensorFlow's start-up lines, tf2onnx, warnings)"


def verbs() -> list[Verb]:
    from tlcut.cli import fidelity, lab, learning, pipeline, planning, serving, tiles

    return [v() for m in (pipeline, planning, fidelity, tiles, serving, learning, lab) for v in m.VERBS]


class Parser(argparse.ArgumentParser):
    """argparse whose refusals read like every other user mistake: one ``tlcut: error:`` line that
    names the verb and where its usage is, exit code 2 (argparse prints the usage and then the error)."""

    def error(self, message):
        verb = self.prog.split(" ", 1)[1] if " " in self.prog else None
        where = f"`tlcut {verb} --help`" if verb else "`tlcut --help`"
        self.exit(2, f"tlcut: error: {verb + ': ' if verb else ''}{message}; see {where}\n")


def build_parser() -> argparse.ArgumentParser:
    from tlcut import __version__

    p = Parser(
        prog="tlcut",
        description="Cut a DNN between a device and an edge server, with a Transfer Layer at the cut.",
        epilog="pipeline: export -> cuts -> bench (device, edge) -> plan -> compile -> serve / run",
    )
    p.add_argument("--version", action="version", version=f"tlcut {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    for v in verbs():
        doc = (v.__doc__ or "").strip()
        sp = sub.add_parser(v.name, help=doc.splitlines()[0], description=doc,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        for g in v.groups:
            g.add_to(sp)
        v.add(sp)
        if "-v" not in sp._option_string_actions:  # also after the verb, as users type it
            sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        sp.set_defaults(func=v)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    from tlcut import quiet

    if a.verbose:
        os.environ[quiet.VERBOSE_ENV] = "1"  # and the commands tlcut starts
    quiet.silence_libraries(warn=True)
    if not getattr(a, "func", None):
        parser.print_help()
        return 2
    try:
        return a.func(a)
    except TlcutError as e:
        print(f"tlcut: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tlcut: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tlcut ... | head`: the reader has gone; no traceback, as with any CLI
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

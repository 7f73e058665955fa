"""Batching at the edge, after Triton's dynamic batcher: requests that wait together for the same
tail run as one batch, on tails that `tlcut compile --batch` wrote.

The edge's core takes every request waiting (up to ``max_batch``), with ``gather`` here, waits up
to ``max_queue_delay_us`` after the first for more, validates each one alone, and hands the good
ones for one tail to ``infer``: one engine run per batch, a static batch padded with zeros.
"""

from __future__ import annotations

import time

import numpy as np

from tlcut.bundle import BATCH_DYNAMIC, Bundle
from tlcut.runtime import protocol as P
from tlcut.runtime.edge import describe_key, log, receive


class Batcher:
    """The batched builds of an edge's tails, and how requests are gathered for them."""

    def __init__(self, bundle: Bundle, max_batch: int):
        self.bundle, self.max_batch = bundle, max_batch
        #: key -> (runner, input name, static batch or None for a symbolic one)
        self.tails: dict[tuple[int, int], tuple] = {}

    def load(self, key: tuple[int, int], cut: int, tl: bool, be, threads: int | None, precision: str) -> None:
        """The batched build of the tail of ``cut`` (with the EdgeTL where ``tl``), where one was compiled."""
        a = self.bundle.batched_tail(cut, tl, be.name, precision)
        if a is not None:
            cap = None if a.batch == BATCH_DYNAMIC else a.batch
            self.tails[key] = (be.runner(self.bundle.path / a.file, threads=threads), a.input["name"], cap)

    def warm(self, key: tuple[int, int], runner) -> None:
        """Run the batched tail of ``key`` once at every size a batch can have (an engine's first run
        at a new shape plans its memory); where there is none, say its requests run one at a time."""
        if key in self.tails:
            br, name, cap = self.tails[key]
            br.activate()
            (dtype, shape), = runner.input_metadata().values()
            for n in ([cap] if cap else range(2, self.max_batch + 1)):
                br.infer({name: np.zeros((n, *shape[1:]), dtype)}, check=False)
            return
        what = describe_key(*key)
        how = ("" if key[0] == P.INPUT_CUT else f"; compile one with `tlcut compile {self.bundle.path} --cuts {key[0]} "
               f"--tl {'on' if key[1] else 'off'} --batch dynamic`")
        log.warning("%s has no batched tail: its requests run one at a time%s", what, how)

    @staticmethod
    def infer(batched: tuple, tensors: list, stats) -> list:
        """Each tensor's result from one run of the batched tail per batch of its size, counted in ``stats``."""
        br, bname, cap = batched
        out = []
        step = cap or len(tensors)
        for s in range(0, len(tensors), step):
            chunk = tensors[s:s + step]
            x = np.concatenate(chunk)
            if cap and len(chunk) < cap:
                x = np.concatenate([x, np.zeros((cap - len(chunk), *x.shape[1:]), x.dtype)])
            y = next(iter(br.infer({bname: x}, check=False).values()))
            out += [y[j:j + 1] for j in range(len(chunk))]
            stats["batches"] += 1
        return out

    @staticmethod
    def gather(sock, room: int, delay_s: float, stats) -> list:
        """(identity, frames, receipt time) of every request waiting, up to ``room``, and of those
        arriving until ``delay_s`` after the first; never waits once the batch is full."""
        import zmq

        got: list = []
        deadline = None
        while len(got) < room:
            try:
                ident, frames = receive(sock, zmq.NOBLOCK)
            except zmq.Again:
                left = (deadline - time.perf_counter()) if deadline is not None else 0.0
                if left <= 0:
                    break
                if left >= 1e-3:
                    sock.poll(int(left * 1e3))  # whole milliseconds; the rest is slept below
                else:
                    time.sleep(min(left, 1e-4))
                continue
            t = time.perf_counter()
            deadline = deadline if deadline is not None else t + delay_s
            stats["messages"] += 1
            got.append((ident, frames, t))
        return got

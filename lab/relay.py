"""A TCP relay that shapes one direction: the link emulation where netem or root is missing.

    python -m tlcut.lab.relay LISTEN_HOST:PORT UPSTREAM_HOST:PORT DELAY_MS [RATE_MBPS] [CONTROL_FILE]

Bytes from the client (the device) leave the relay no faster than RATE_MBPS, as a token-bucket
shaper would send them (the rate is of link bytes: TCP/IP framing, 1514 bytes on the wire per 1448
of payload, is counted as the planner counts it), then are held DELAY_MS before they pass upstream
(the edge server), in order. Bytes back go through at once. Without a rate, only the delay is
added: the testbed shapes with tc and uses the relay for the delay alone where netem is missing;
the demo without root uses it for both, on loopback. A CONTROL_FILE holding "RATE_MBPS DELAY_MS"
changes both while the relay runs (a trace being replayed writes it; the relay reads it when its
modification time changes, within 20 ms).
"""

from __future__ import annotations

import asyncio
import sys
import time

#: Link bytes per payload byte (TCP over IPv4 on Ethernet): the same figure the planner uses.
WIRE_OVERHEAD = 1514 / 1448
CHUNK = 8192  # small reads keep the pacing smooth (8 KiB is 1.2 ms at 57 Mbit/s)


class Shape:
    """The link as it is now; a control file can change it."""

    def __init__(self, delay_s: float, rate_bps: float, control: str | None = None):
        self.delay_s, self.rate_bps, self.control, self._mtime = delay_s, rate_bps, control, None

    async def follow(self):
        import os

        while self.control:
            try:
                m = os.stat(self.control).st_mtime_ns
                if m != self._mtime:
                    self._mtime = m
                    rate, delay = (float(x) for x in open(self.control).read().split())
                    if rate >= 0 and delay >= 0:  # rate 0: delay only (tc shapes the testbed)
                        self.rate_bps, self.delay_s = rate * 1e6, delay / 1e3
            except (OSError, ValueError):
                pass  # being rewritten: the next look finds it whole
            await asyncio.sleep(0.02)


async def _uplink(reader, writer, shape: Shape):
    q: asyncio.Queue = asyncio.Queue()

    async def release():
        while True:
            due, data = await q.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(release())
    sent_until = 0.0  # when the shaper has finished sending what it holds
    try:
        while data := await reader.read(CHUNK):
            now = time.monotonic()
            if shape.rate_bps:
                sent_until = max(now, sent_until) + len(data) * WIRE_OVERHEAD * 8 / shape.rate_bps
                q.put_nowait((sent_until + shape.delay_s, data))
            else:
                q.put_nowait((now + shape.delay_s, data))
    finally:
        q.put_nowait((0, None))
        await task


async def _downlink(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _serve(listen, upstream, shape: Shape):
    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection(*upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(_uplink(cr, uw, shape), _downlink(ur, cw), return_exceptions=True)

    server = await asyncio.start_server(handle, *listen)
    follower = asyncio.create_task(shape.follow())
    async with server:
        await server.serve_forever()
    follower.cancel()


def _addr(s: str):
    host, _, port = s.rpartition(":")
    return host, int(port)


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    usage = __doc__.strip().splitlines()[2].strip()
    if len(argv) not in (3, 4, 5):
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    try:
        listen, upstream, delay_ms = _addr(argv[0]), _addr(argv[1]), float(argv[2])
        rate = float(argv[3]) * 1e6 if len(argv) >= 4 else 0.0
        control = argv[4] if len(argv) == 5 else None
        if delay_ms < 0 or rate < 0:
            raise ValueError
    except ValueError:
        print(f"relay: error: addresses are HOST:PORT, the delay and rate non-negative numbers; usage: {usage}",
              file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(listen, upstream, Shape(delay_ms / 1e3, rate, control)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

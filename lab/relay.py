"""A TCP relay that shapes one direction: the link emulation where netem or root is missing.

    python -m tlcut.lab.relay LISTEN_HOST:PORT UPSTREAM_HOST:PORT DELAY_MS [RATE_MBPS]

Bytes from the client (the device) leave the relay no faster than RATE_MBPS, as a token-bucket
shaper would send them (the rate is of link bytes: TCP/IP framing, 1514 bytes on the wire per 1448
of payload, is counted as the planner counts it), then are held DELAY_MS before they pass upstream
(the edge server), in order. Bytes back go through at once. Without a rate, only the delay is
added: the testbed shapes with tc and uses the relay for the delay alone where netem is missing;
the demo without root uses it for both, on loopback.
"""

from __future__ import annotations

import asyncio
import sys
import time

#: Link bytes per payload byte (TCP over IPv4 on Ethernet): the same figure the planner uses.
WIRE_OVERHEAD = 1514 / 1448
CHUNK = 8192  # small reads keep the pacing smooth (8 KiB is 1.2 ms at 57 Mbit/s)


async def _uplink(reader, writer, delay_s, rate_bps):
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
            if rate_bps:
                sent_until = max(now, sent_until) + len(data) * WIRE_OVERHEAD * 8 / rate_bps
                q.put_nowait((sent_until + delay_s, data))
            else:
                q.put_nowait((now + delay_s, data))
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


async def _serve(listen, upstream, delay_s, rate_bps):
    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection(*upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(_uplink(cr, uw, delay_s, rate_bps), _downlink(ur, cw), return_exceptions=True)

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def _addr(s: str):
    host, _, port = s.rpartition(":")
    return host, int(port)


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    usage = __doc__.strip().splitlines()[2].strip()
    if len(argv) not in (3, 4):
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    try:
        listen, upstream, delay_ms = _addr(argv[0]), _addr(argv[1]), float(argv[2])
        rate = float(argv[3]) * 1e6 if len(argv) == 4 else 0.0
        if delay_ms < 0 or rate < 0:
            raise ValueError
    except ValueError:
        print(f"relay: error: addresses are HOST:PORT, the delay and rate non-negative numbers; usage: {usage}",
              file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(listen, upstream, delay_ms / 1e3, rate))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A TCP relay that delays one direction: the testbed's propagation delay where netem is missing.

    python -m tlcut.runtime.relay LISTEN_HOST:PORT UPSTREAM_HOST:PORT DELAY_MS

Bytes from the client (the device) are held for DELAY_MS after they arrive, then passed upstream
(the edge server) in order; bytes back go through at once. The uplink is shaped before the relay,
so a request sees the shaped transfer plus the delay, and the round trip one delay.
"""

from __future__ import annotations

import asyncio
import sys
import time


async def _uplink(reader, writer, delay_s):
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
    try:
        while data := await reader.read(1 << 16):
            q.put_nowait((time.monotonic() + delay_s, data))
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


async def _serve(listen, upstream, delay_s):
    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection(*upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(_uplink(cr, uw, delay_s), _downlink(ur, cw), return_exceptions=True)

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def _addr(s: str):
    host, _, port = s.rpartition(":")
    return host, int(port)


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(_addr(argv[0]), _addr(argv[1]), float(argv[2]) / 1e3))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

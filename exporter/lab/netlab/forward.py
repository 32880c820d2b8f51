"""TCP forwarding from a host address into the lab: a browser on the host can open a region's exporter.

Each accepted connection is matched by one made from inside the lab's central namespace (netns.run_in), so
the host needs no route into 198.18.0.0/15 and parallel labs never clash. Isolating a region cuts these
connections too, as it cuts Prometheus' scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from exporter.lab.netlab.netns import arun_in


class Forwarder:
    def __init__(self, listen: tuple[str, int], ns: str, target: tuple[str, int]) -> None:
        self.listen = listen
        self.ns = ns
        self.target = target
        self._server: asyncio.Server | None = None

    async def start(self) -> Forwarder:
        self._server = await asyncio.start_server(self._serve, *self.listen)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = await arun_in(self.ns, lambda: socket.create_connection(self.target, timeout=5.0), 10.0)
        except OSError:
            writer.close()
            return
        sock.setblocking(False)
        up_reader, up_writer = await asyncio.open_connection(sock=sock)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()

"""``python -m exporter.lab.sink``: an Alertmanager webhook receiver that logs every notification.

The compose stack (deploy/compose/) points Alertmanager's ``pager`` and ``ticket`` webhooks at this sink,
so ``docker compose logs -f sink`` shows what would have paged: each notification as the shipped templates
render it (alerts/templates/outage.tmpl), with the time it arrived, or one JSON object per line with
``--format json``::

    python -m exporter.lab.sink --listen 0.0.0.0:5001 [--format text|json]

It is the lab's :class:`~exporter.lab.stack.WebhookSink` (the receiver the end-to-end tests use) bound to
a chosen address, plus ``GET /-/healthy`` for container health checks and ``GET /`` listing the latest
notifications (HTML for a browser, ``?format=text`` as text, JSON otherwise). It keeps only the last
``--keep`` notifications in memory, so it can run for days.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import html
import json
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from aiohttp import web

from exporter.lab.stack import Notification, WebhookSink

DEFAULT_LISTEN = "127.0.0.1:5001"  # the webhook base URL in alerts/alertmanager.yml
DEFAULT_KEEP = 500


class LoggingSink(WebhookSink):
    """A :class:`WebhookSink` on ``host:port`` that writes each notification to ``out`` as one JSON line."""

    def __init__(self, host: str, port: int, *, out: TextIO | None = None, keep: int = DEFAULT_KEEP,
                 fmt: str = "json") -> None:
        super().__init__(echo=False)
        self.host = host
        self.port = port
        self.out = out or sys.stdout
        self.keep = keep
        self.fmt = fmt  # "json": one JSON object per line; "text": the rendered notification

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> LoggingSink:
        app = web.Application()
        app.router.add_get("/", self._latest)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_post("/{receiver}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the real port when asked for port 0
        return self

    async def _receive(self, request: web.Request) -> web.Response:
        before = len(self.notifications)
        response = await super()._receive(request)
        if len(self.notifications) > before:  # appended without yielding: the last one is this request's
            note = self.notifications[-1]
            self.out.write((json_line(note) if self.fmt == "json" else note.printed() + "\n") + "\n")
            self.out.flush()
            del self.notifications[:-self.keep]
        return response

    async def _healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def _latest(self, request: web.Request) -> web.Response:
        """The notifications kept, newest first: HTML for a browser, text with ?format=text, else JSON."""
        latest = list(reversed(self.notifications))
        wanted = request.query.get("format", "")
        if wanted == "text" or (not wanted and "text/plain" in request.headers.get("Accept", "")):
            return web.Response(text=latest_text(latest))
        if wanted == "html" or (not wanted and "text/html" in request.headers.get("Accept", "")):
            return web.Response(text=latest_html(latest), content_type="text/html")
        return web.json_response([record(n) for n in latest])


def latest_text(notes: list[Notification]) -> str:
    if not notes:
        return "no notifications received yet\n"
    return "\n\n".join(n.printed() for n in notes) + "\n"


def latest_html(notes: list[Notification]) -> str:
    e = html.escape
    items = "".join(f"<li><b>{e(n.time())}</b> {e(n.receiver)}: <b>{e(n.title())}</b><pre>{e(n.text())}</pre></li>"
                    for n in notes) or "<li>no notifications received yet</li>"
    return ("<!doctype html><html><head><meta charset='utf-8'><title>webhook sink</title></head><body>"
            f"<h1>Notifications received, newest first ({len(notes)})</h1><ul>{items}</ul></body></html>")


def record(note: Notification) -> dict:
    """What is logged for one notification: when, which receiver, the rendered title and text, a one-line
    summary and the payload."""
    when = datetime.datetime.fromtimestamp(note.received_at, datetime.UTC)
    return {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "receiver": note.receiver,
            "status": note.payload.get("status", ""), "title": note.title(), "text": note.text(),
            "summary": note.summary(), "notification": note.payload}


def json_line(note: Notification) -> str:
    return json.dumps(record(note), separators=(",", ":"), sort_keys=False)


def build_parser() -> argparse.ArgumentParser:
    from exporter.server import parse_listen

    p = argparse.ArgumentParser(prog="python -m exporter.lab.sink",
                                description="Receive Alertmanager webhooks and print each one.")
    p.add_argument("--listen", type=parse_listen, default=DEFAULT_LISTEN,
                   help=f"host:port to listen on (default {DEFAULT_LISTEN})")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                   help=f"notifications kept for GET / (default {DEFAULT_KEEP})")
    p.add_argument("--format", dest="fmt", choices=("text", "json"), default="text",
                   help="text: each notification as the shipped templates render it, with its arrival time "
                        "(default); json: one JSON object per line")
    return p


async def serve(host: str, port: int, *, keep: int = DEFAULT_KEEP, stop: asyncio.Event | None = None,
                out: TextIO | None = None, fmt: str = "text") -> int:
    """Run the sink until SIGINT/SIGTERM (or ``stop``); 1 when the address cannot be bound."""
    stop = stop or asyncio.Event()
    try:
        sink = await LoggingSink(host, port, out=out, keep=keep, fmt=fmt).start()
    except OSError as exc:
        print(f"sink: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    print(f"sink: listening on {host}:{sink.port}; POST /<receiver> with Alertmanager's webhook payload",
          file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await sink.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.keep < 1:
        print("sink: --keep must be at least 1", file=sys.stderr)
        return 2
    return asyncio.run(serve(*ns.listen, keep=ns.keep, fmt=ns.fmt))


if __name__ == "__main__":
    sys.exit(main())

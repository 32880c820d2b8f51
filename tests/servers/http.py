"""Local peers for the http and tcp prober tests, all on loopback with port 0.

- :func:`make_pki`: a throwaway CA (trustme) with a valid leaf for www.test / 127.0.0.1 / ::1, an expired
  one, one for the wrong name, and a client certificate; the CA file is written for ``tls_config.ca_file``.
- :func:`start_http`: the aiohttp app below (:func:`build_app`), plain or TLS.
- :func:`start_raw`: an asyncio TCP server running a scripted behaviour (:data:`RAW_BEHAVIOURS`): reset on
  accept, silence, garbage instead of HTTP, an HTTP/1.0 reply, a truncated or malformed body, a forward
  proxy (plain and CONNECT), an SMTP-like banner dialogue with STARTTLS (or TLS from the first byte).
- :func:`full_backlog_listener`: a listener whose accept queue is full, so new connects hang (SYN drop).
- :func:`closed_port`: a port bound but not listening, so connects are refused.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import select
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiohttp import web

from exporter.checks import Check
from exporter.config.model import HTTPProbe, Module, Resolver, TCPProbe

PROXY_STATUS = "no_server_available"
CONTENT_BODY = b"<html><body>status: all systems operational</body></html>"


# --- PKI -------------------------------------------------------------------------------------------------
@dataclass
class PKI:
    ca: trustme.CA
    ca_file: str
    valid: trustme.LeafCert
    expired: trustme.LeafCert
    wrong_host: trustme.LeafCert
    client_cert_file: str
    client_key_file: str

    def server_context(self, leaf: trustme.LeafCert, *, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(ctx)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(ctx)
        return ctx


def make_pki(directory: Path) -> PKI:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("prober.test")
    client_cert, client_key = directory / "client.pem", directory / "client.key"
    client.cert_chain_pems[0].write_to_path(str(client_cert))
    client.private_key_pem.write_to_path(str(client_key))
    return PKI(
        ca=ca,
        ca_file=str(ca_file),
        valid=ca.issue_cert("www.test", "127.0.0.1", "::1", "localhost",
                            not_after=now + datetime.timedelta(days=400)),
        expired=ca.issue_cert("www.test", "127.0.0.1", not_before=now - datetime.timedelta(days=30),
                              not_after=now - datetime.timedelta(days=1)),
        wrong_host=ca.issue_cert("wrong.test"),
        client_cert_file=str(client_cert),
        client_key_file=str(client_key),
    )


# --- aiohttp test app --------------------------------------------------------------------------------------
async def _root(request: web.Request) -> web.Response:
    return web.Response(text="hello from the test peer")


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    headers = {"proxy-status": PROXY_STATUS} if code == 503 else {}
    return web.Response(status=code, text=f"status {code}", headers=headers)


async def _redirect(request: web.Request) -> web.Response:
    """/redirect/N: a chain of N hops ending in 200."""
    left = int(request.match_info["n"])
    if left == 0:
        return web.Response(text="arrived")
    raise web.HTTPFound(f"/redirect/{left - 1}")


async def _loop(request: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


async def _redirect_to(request: web.Request) -> web.Response:
    status = int(request.query.get("status", "302"))
    return web.Response(status=status, headers={"Location": request.query["url"]})


async def _slow_first_byte(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "5")))
    return web.Response(text="late")


async def _slow_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "20"})
    await response.prepare(request)
    await response.write(b"0123456789")
    await asyncio.sleep(float(request.query.get("delay", "5")))
    await response.write(b"0123456789")
    return response


async def _large(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * int(request.query.get("size", str(1 << 20))))


async def _content(request: web.Request) -> web.Response:
    return web.Response(body=CONTENT_BODY, content_type="text/html",
                        headers={"X-Outage-State": "green", "X-Multi": "one"})


async def _big_header(request: web.Request) -> web.Response:
    return web.Response(text="ok", headers={"Content-Security-Policy": "default-src " + "x" * 20000})


async def _set_cookie(request: web.Request) -> web.Response:
    response = web.Response(text="cookie set")
    response.set_cookie("session", "from-an-earlier-probe")
    return response


async def _gzip(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(CONTENT_BODY * 10), headers={"Content-Encoding": "gzip"})


async def _echo(request: web.Request) -> web.Response:
    return web.Response(text="seen")


@dataclass(frozen=True)
class Seen:
    """A request as the test peer received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    peer: tuple  # (address, port, ...) of the client connection


SEEN = web.AppKey("seen", list)


@web.middleware
async def _record(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    body = await request.read()
    headers = {k.lower(): v for k, v in request.headers.items()}
    peer = request.transport.get_extra_info("peername") if request.transport else ()
    request.app[SEEN].append(Seen(request.method, request.path_qs, headers, body, tuple(peer)))
    return await handler(request)


def build_app() -> web.Application:
    app = web.Application(middlewares=[_record])
    app[SEEN] = []
    app.router.add_get("/", _root)
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/redirect/{n}", _redirect)
    app.router.add_get("/loop", _loop)
    app.router.add_route("*", "/redirect-to", _redirect_to)
    app.router.add_get("/slow-first-byte", _slow_first_byte)
    app.router.add_get("/slow-body", _slow_body)
    app.router.add_get("/large", _large)
    app.router.add_get("/content", _content)
    app.router.add_get("/gzip", _gzip)
    app.router.add_get("/set-cookie", _set_cookie)
    app.router.add_get("/big-header", _big_header)
    app.router.add_route("*", "/echo", _echo)
    return app


@dataclass
class Site:
    runner: web.AppRunner
    host: str
    port: int
    tls: bool

    @property
    def seen(self) -> list[Seen]:
        return self.runner.app[SEEN]

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{'https' if self.tls else 'http'}://{name}:{self.port}{path}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_http(*, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> Site:
    runner = web.AppRunner(build_app(), handle_signals=False, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return Site(runner=runner, host=host, port=port, tls=ssl_context is not None)


# --- Raw TCP peers -----------------------------------------------------------------------------------------


@dataclass
class RawServer:
    server: asyncio.Server
    host: str
    port: int
    seen: list[bytes] = field(default_factory=list)  # lines / requests the peer received
    peers: list[tuple] = field(default_factory=list)  # client address of every connection

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def stop(self) -> None:
        self.server.close()
        if hasattr(self.server, "close_clients"):
            self.server.close_clients()


@dataclass
class PeerConn:
    """One accepted connection, as a raw behaviour sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: RawServer
    tls_context: ssl.SSLContext | None
    options: dict[str, object]

    async def read_head(self) -> bytes:
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.server.seen.append(head)
        return head

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


async def start_raw(behaviour: str, *, host: str = "127.0.0.1", tls_context: ssl.SSLContext | None = None,
                    **options: object) -> RawServer:
    """A TCP server running one of RAW_BEHAVIOURS for every connection."""
    holder: list[RawServer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holder[0].peers.append(writer.get_extra_info("peername"))
        try:
            await RAW_BEHAVIOURS[behaviour](PeerConn(reader, writer, holder[0], tls_context, options))
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(handle, host, 0)
    raw = RawServer(server=server, host=host, port=server.sockets[0].getsockname()[1])
    holder.append(raw)
    return raw


async def _reset(c: PeerConn) -> None:
    """Accept, then drop the connection with a RST (SO_LINGER 0)."""
    sock = c.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _silent(c: PeerConn) -> None:
    """Accept and never answer (neither HTTP nor a TLS ServerHello) until the client hangs up."""
    while await c.reader.read(4096):
        pass


async def _garbage(c: PeerConn) -> None:
    """Answers anything (an HTTP request or a TLS ClientHello) with bytes that are not HTTP."""
    await c.reader.read(1)
    await c.send(b"SSH-2.0-NotHTTP\r\nthis is not a status line\r\n\r\n")
    await _silent(c)


async def _http10(c: PeerConn) -> None:
    await c.read_head()
    await c.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold but fine")


async def _truncated(c: PeerConn) -> None:
    """Promises 100 bytes of body, sends 10, hangs up."""
    await c.read_head()
    await c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")


async def _bad_chunks(c: PeerConn) -> None:
    """A chunked body whose chunk size is not hex."""
    await c.read_head()
    await c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nnot a chunk\r\n0\r\n\r\n")
    await _silent(c)


async def _proxy(c: PeerConn) -> None:
    """A forward proxy: tunnels CONNECT to the (loopback) address asked for; answers plain requests itself
    with the request line it was sent."""
    request_line = (await c.read_head()).split(b"\r\n", 1)[0]
    if request_line.startswith(b"CONNECT "):
        host, _, port = request_line.split()[1].decode().rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        await c.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(c.reader, up_writer), _pipe(up_reader, c.writer), return_exceptions=True)
        return
    body = b"proxied: " + request_line
    await c.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    finally:
        sink.close()


async def _banner(c: PeerConn, *, starttls: bool = True) -> None:
    """SMTP-like: greeting with a session id, ECHO <text>, EHLO, STARTTLS, QUIT. Lines end in CRLF."""
    await c.send(f"220 mail.test ESMTP ready id={c.options.get('session', 'abc123')}\r\n".encode())
    while line := await c.reader.readline():
        command = line.strip()
        c.server.seen.append(command)
        if command.startswith(b"EHLO"):
            await c.send(b"250-mail.test\r\n250 STARTTLS\r\n")
        elif command.startswith(b"ECHO "):
            await c.send(b"250 echo " + command[5:] + b"\r\n")
        elif command == b"STARTTLS" and starttls and c.tls_context is not None:
            await c.send(b"220 ready to start TLS\r\n")
            await c.writer.start_tls(c.tls_context)
        elif command == b"QUIT":
            await c.send(b"221 bye\r\n")
            return
        else:
            await c.send(b"500 unknown command\r\n")


async def _long_line(c: PeerConn) -> None:
    """A line longer than any expect is matched against, then silence."""
    await c.send(b"220 " + b"x" * (128 * 1024) + b"\r\n")
    await _silent(c)


async def _tls_banner(c: PeerConn) -> None:
    """TLS from the first byte (like SMTPS), then the banner dialogue."""
    assert c.tls_context is not None
    await c.writer.start_tls(c.tls_context)
    await _banner(c, starttls=False)


RAW_BEHAVIOURS: dict[str, Callable[[PeerConn], Awaitable[None]]] = {
    "reset": _reset,
    "silent": _silent,
    "garbage": _garbage,
    "http10": _http10,
    "truncated": _truncated,
    "bad_chunks": _bad_chunks,
    "proxy": _proxy,
    "banner": _banner,
    "tls_banner": _tls_banner,
    "long_line": _long_line,
}


# --- Sockets that make connects fail -----------------------------------------------------------------------
def closed_port(host: str = "127.0.0.1") -> socket.socket:
    """A bound socket that does not listen: connecting to its port is refused. Close it when done."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


@dataclass
class FullBacklog:
    listener: socket.socket
    fillers: list[socket.socket]

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def close(self) -> None:
        for sock in (*self.fillers, self.listener):
            sock.close()


def full_backlog_listener(host: str = "127.0.0.1", attempts: int = 16) -> FullBacklog | None:
    """A listener (backlog 0, never accepting) plus connections that fill its accept queue.

    Linux drops SYNs to a listener whose accept queue is full, so a further connect hangs until the
    client gives up: a real connect timeout on loopback. Returns None where the kernel answers instead
    (e.g. net.ipv4.tcp_abort_on_overflow=1), so callers can skip.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(0)
    fillers: list[socket.socket] = []
    for _ in range(attempts):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setblocking(False)
        client.connect_ex(listener.getsockname())
        fillers.append(client)
        _, writable, _ = select.select([], [client], [], 0.1)
        if not writable:  # this SYN was dropped: the queue is full
            return FullBacklog(listener, fillers)
    FullBacklog(listener, fillers).close()
    return None


# --- Checks ------------------------------------------------------------------------------------------------
def http_check(target: str, *, resolvers: tuple[Resolver, ...] = (), hostname: str | None = None,
               **http: object) -> Check:
    module = Module(name="http_test", prober="http", http=HTTPProbe(**http))  # type: ignore[arg-type]
    return Check(service="svc", provider="prov", region="local", check="http", target=target, resolver="",
                 module=module, resolvers=resolvers, hostname=hostname)


def tcp_check(target: str, *, resolvers: tuple[Resolver, ...] = (), hostname: str | None = None,
              **tcp: object) -> Check:
    module = Module(name="tcp_test", prober="tcp", tcp=TCPProbe(**tcp))  # type: ignore[arg-type]
    return Check(service="svc", provider="prov", region="local", check="tcp", target=target, resolver="",
                 module=module, resolvers=resolvers, hostname=hostname)

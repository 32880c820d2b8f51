"""HTTP prober: blackbox_exporter's http module semantics, with a DNS path we control.

Per hop (the first request and every redirect followed): resolve the URL host through the check's
resolvers (fresh each time) and connect to the first address ourselves. A plain ``http://`` hop then
speaks HTTP/1.1 on that socket with :mod:`exporter.probers.http1`, which reads with the kernel's receive
stamps. An ``https://`` hop does the TLS handshake ourselves (SNI and certificate name = the hostname) and
hands the open connection to aiohttp, which writes the request and parses the response. Doing the
connection ourselves gives exact connect and tls phases and keeps aiohttp's resolver and DNS cache out of
the picture. Phases are summed over hops, like blackbox.

Phases: resolve (only when a name was looked up), connect, tls, processing (connection ready -> first
response byte, as blackbox's got-connection -> first byte), transfer (body). Through a ``proxy_url``
aiohttp connects to the proxy itself; connect then covers the proxy connection and any tunnel and TLS
set-up, tls is absent, and processing ends when the response headers are parsed.

Timing: phases are read from ``clock.now`` at the event, and replies are stamped when they arrived. On a
plain hop that is the kernel's stamp of the segment (``SO_TIMESTAMPNS``), for the first response byte, the
end of the head and the last body bytes. Over TLS it is aiohttp's ``data_received`` callback, which a busy
loop can run late: its transports read with ``recv``, which carries no kernel stamp. Either way the time
from the latest stamp until the probe's task resumes (the event loop's queue, plus parsing) is left out of
the probe's duration, while a peer that is slow to finish its headers or body is still timed in full.

Where this differs from blackbox: only HTTP/1.x is spoken (aiohttp has no HTTP/2 client);
``body_size_limit`` counts the decoded body (gzip and deflate are decoded while reading); credentials
(basic_auth, bearer tokens, an Authorization header) are not sent to another origin a redirect points at.

One aiohttp session per event loop is shared by the probes that use it; it never reuses a connection (a
probe must see a fresh connect) and keeps no cookies. Everything derivable from the module config is prepared once
per :class:`HTTPProbe` (``_prepare``) or per :class:`TLSConfig` (``tlsutil.client_context``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
from dataclasses import dataclass

import aiohttp
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDictProxy
from yarl import URL

from exporter import __version__
from exporter.checks import Check
from exporter.config.model import MAX_BODY_BYTES, MAX_REDIRECTS, HTTPProbe
from exporter.config.probe_policy import Endpoint, check_hop
from exporter.probers import http1, httpsession, tlsutil, twopath
from exporter.probers import result as r
from exporter.probers.errors import reason_for_exception
from exporter.probers.resolve import ip_literal
from exporter.probers.result import ProbeResult
from exporter.probers.secrets import read_secret
from exporter.probers.tcp import (
    SSL_SHUTDOWN_TIMEOUT,
    Attempt,
    ProbeFailure,
    handshake_timeout,
    new_socket,
    tls_context,
)

USER_AGENT = f"outage-exporter/{__version__}"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 64 * 1024
_STAGE_REDIRECT = "redirect"  # not a phase: judging a redirect's target under a /probe policy


async def close() -> None:
    """Close the running loop's shared aiohttp session (call at shutdown; the next probe opens a new one)."""
    await httpsession.close()


# --- Config-derived, computed once per HTTPProbe ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Prepared:
    headers: tuple[tuple[str, str], ...]  # static request headers, without Host
    cross_origin_headers: tuple[tuple[str, str], ...]  # the same minus any Authorization
    host_header: str | None  # a Host header from the module's headers
    authorization: str | None  # from basic_auth / bearer_token when no file is involved
    user_authorization: bool  # the module sets Authorization itself: add none of ours
    body: bytes | None
    valid_text: str  # "2xx" or "200, 301", for logs
    limit: int  # body bytes accepted
    keep_body: bool  # body regexes need the body; otherwise bytes are only counted


@functools.lru_cache(maxsize=256)
def _prepare(cfg: HTTPProbe) -> _Prepared:
    names = {name.lower() for name, _ in cfg.headers}
    headers: list[tuple[str, str]] = []
    if "user-agent" not in names:
        headers.append(("User-Agent", USER_AGENT))
    if cfg.compression and "accept-encoding" not in names:
        headers.append(("Accept-Encoding", cfg.compression))
    if "connection" not in names:
        headers.append(("Connection", "close"))
    host_header = None
    for name, value in cfg.headers:
        if name.lower() == "host":
            host_header = value
        else:
            headers.append((name, value))
    static_auth = None
    if cfg.basic_auth is not None and cfg.basic_auth.password_file is None:
        static_auth = _basic(cfg.basic_auth.username, cfg.basic_auth.password or "")
    elif cfg.basic_auth is None and cfg.bearer_token:
        static_auth = f"Bearer {cfg.bearer_token}"
    return _Prepared(
        headers=tuple(headers),
        cross_origin_headers=tuple(h for h in headers if h[0].lower() != "authorization"),
        host_header=host_header,
        authorization=static_auth,
        user_authorization="authorization" in names,
        body=cfg.body.encode() if cfg.body is not None else None,
        valid_text=", ".join(map(str, cfg.valid_status_codes)) or "2xx",
        limit=cfg.body_size_limit or MAX_BODY_BYTES,
        keep_body=bool(cfg.fail_if_body_matches_regexp or cfg.fail_if_body_not_matches_regexp),
    )


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


@functools.lru_cache(maxsize=4096)
def parse_target(target: str) -> URL:
    """The URL to probe: ``http://`` is assumed when the target has no scheme. Raises ValueError."""
    url = URL(target if "://" in target else f"http://{target}")
    if url.scheme not in _DEFAULT_PORTS or not url.raw_host:
        raise ValueError(f"target {target!r} is not an http(s) URL with a host")
    return url


def _authority(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, (url.raw_host or "").lower(), url.port)


def _host_header(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.port == _DEFAULT_PORTS[url.scheme] else f"{host}:{url.port}"


# --- One probe run ---------------------------------------------------------------------------------------
Reply = aiohttp.ClientResponse | http1.Response


class _Hop:
    """One request/response exchange and the connection it used."""

    __slots__ = ("response", "transport", "direct", "tls")

    def __init__(self) -> None:
        self.response: Reply | None = None
        self.transport: asyncio.BaseTransport | None = None  # only when the probe opened it for aiohttp
        self.direct: http1.Connection | None = None  # a plain hop spoken without aiohttp
        self.tls: tlsutil.TLSInfo | None = None

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
        if self.transport is not None:
            self.transport.close()
        if self.direct is not None:
            self.direct.close()

    def abort(self) -> None:
        """Drop the connection at once. A failed exchange owes the peer no graceful TLS shutdown, and a
        peer that stopped reading would otherwise hold our socket for SSL_SHUTDOWN_TIMEOUT longer."""
        if self.direct is not None:
            self.direct.close()
            return
        transport = self.transport
        response = self.response
        if transport is None and isinstance(response, aiohttp.ClientResponse) and response.connection is not None:
            transport = response.connection.transport
        if transport is not None:
            transport.abort()


async def probe(check: Check, *, deadline: float) -> ProbeResult:
    if check.two_path is not None and check.two_path.enabled:
        return await twopath.probe(check, deadline=deadline, probe_once=probe_target)
    result, _ = await probe_target(check, deadline=deadline)
    return result


async def probe_target(check: Check, *, deadline: float) -> tuple[ProbeResult, twopath.Origin | None]:
    """One probe of the check's URL, and where its host name led: the address the first request was sent
    to with the Host header and TLS server name it used (None when the name did not resolve)."""
    attempt = Attempt()
    runs: list[_Run] = []

    async def work() -> None:  # _Run is built inside the attempt, so a bug there becomes ``internal``
        runs.append(_Run(check, attempt, deadline))
        await runs[0].run()

    result = await attempt.run(work, deadline)
    return result, runs[0].first if runs else None


class _Run:
    __slots__ = ("check", "cfg", "prep", "attempt", "deadline", "origin", "first")

    def __init__(self, check: Check, attempt: Attempt, deadline: float) -> None:
        self.check = check
        self.cfg: HTTPProbe = check.module.http
        self.prep = _prepare(self.cfg)
        self.attempt = attempt
        self.deadline = deadline
        self.origin: tuple[str, str, int | None] | None = None
        self.first: twopath.Origin | None = None

    async def run(self) -> None:
        details = self.attempt.details
        details[r.D_HTTP_STATUS] = 0
        details[r.D_HTTP_REDIRECTS] = 0
        details[r.D_TLS] = 0
        try:
            url = parse_target(self.check.target)
        except ValueError as exc:
            self.attempt.note(str(exc))
            raise ProbeFailure(r.CONN_ERROR) from None
        self.origin = _authority(url)
        method, body = self.cfg.method.upper(), self.prep.body
        redirects = 0
        while True:
            hop = _Hop()
            try:
                response = await self._exchange(hop, url, method, body)
                target = self._redirect_target(url, response)
                if target is None:
                    if _is_redirect(response) and not self.cfg.follow_redirects:
                        # blackbox counts a redirect it received but did not follow
                        details[r.D_HTTP_REDIRECTS] = redirects + 1
                    await self._evaluate(response)
                    return
                if redirects >= MAX_REDIRECTS:
                    details[r.D_HTTP_REDIRECTS] = redirects + 1
                    self.attempt.note(f"redirect {redirects + 1} to {target} exceeds the limit of "
                                      f"{MAX_REDIRECTS}")
                    raise ProbeFailure(r.HTTP_TOO_MANY_REDIRECTS)
                redirects += 1
                details[r.D_HTTP_REDIRECTS] = redirects
                self.attempt.note(f"following redirect {redirects}: {response.status} to {target}")
                self._admit(target)
                method, body = _redirect_method(response.status, method, body)
                url = target
            except BaseException:
                hop.abort()
                raise
            finally:
                hop.close()

    def _admit(self, url: URL) -> None:
        """A /probe allow list holds on every hop: judge the redirect's target before looking it up."""
        self.attempt.begin(_STAGE_REDIRECT, timed=False)
        port = url.port or _DEFAULT_PORTS[url.scheme]
        check_hop(Endpoint(_policy_host(url.raw_host or ""), port, str(url.with_user(None))))
        self.attempt.end()

    # -- one exchange --
    async def _exchange(self, hop: _Hop, url: URL, method: str, body: bytes | None) -> Reply:
        cfg, attempt = self.cfg, self.attempt
        host = url.raw_host or ""
        same_origin = _authority(url) == self.origin
        address = await attempt.resolve(host, self.check.resolvers, prefer=cfg.preferred_ip_protocol,
                                        fallback=cfg.ip_protocol_fallback, deadline=self.deadline)
        host_header = self._host_for(url, same_origin)
        if self.first is None:
            self.first = twopath.Origin(address=address, host_header=host_header)
        headers = self._headers(url, host_header, same_origin)
        tls = url.scheme == "https"
        sni = self._sni(host, same_origin) if tls else None
        ctx = tls_context(attempt, cfg.tls_config, alpn=tlsutil.HTTP_ALPN) if tls else None
        shown = "" if host_header == _host_header(url) else f" (Host {host_header})"
        attempt.note(f"{method} {_shown_url(url)}{shown}")
        target = _request_url(url, address)  # credentials in the URL go in our header
        first_byte = headers_in = None  # through a proxy aiohttp connects: no stamps, processing ends now
        port = url.port or _DEFAULT_PORTS[url.scheme]
        if cfg.proxy_url:
            hop.response = await self._via_proxy(hop, method, target, headers, body, ctx, sni)
        elif ctx is None:
            response = hop.response = await self._direct(hop, address, port, method, url, headers, body)
            first_byte, headers_in = hop.direct.first_arrival if hop.direct else None, response.arrived
        else:
            protocol = await self._open(hop, address, port, ctx, sni)
            hop.response = await self._send(httpsession.HopConnection(protocol), method, target, headers, body,
                                            None)
            first_byte, headers_in = protocol.first_byte, protocol.latest_bytes
        attempt.end_at_reply(first_byte, headers_in)
        self._record_response(hop.response)
        attempt.set_tls_details(hop.tls)
        return hop.response

    async def _direct(self, hop: _Hop, address: str, port: int, method: str, url: URL,
                      headers: list[tuple[str, str]], body: bytes | None) -> http1.Response:
        """A plain hop: connect, then one HTTP/1.1 exchange on our own socket (stamped by the kernel)."""
        attempt = self.attempt
        try:
            request = http1.request(method, url.raw_path_qs, headers, body)
        except ValueError as exc:
            attempt.note(f"cannot send the request: {exc}")
            raise ProbeFailure(r.CONN_ERROR) from None
        hop.direct = connection = http1.Connection(new_socket(address), attempt.loop)

        def connected() -> None:
            attempt.connected(address, port)
            attempt.begin(r.PHASE_PROCESSING)

        attempt.connecting(address, port)
        return await connection.exchange((address, port), request, method, connected)

    async def _open(self, hop: _Hop, address: str, port: int, ctx: ssl.SSLContext | None,
                    sni: str | None) -> httpsession.TimedHandler:
        """Connect (and handshake) to ``address`` ourselves; the phases are timed here."""
        attempt, loop = self.attempt, self.attempt.loop
        sock = await attempt.connect(address, port)
        tls_args = {}
        if ctx is not None:
            attempt.begin(r.PHASE_TLS)
            tls_args = dict(ssl=ctx, server_hostname=sni, ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT,
                            ssl_handshake_timeout=handshake_timeout(self.deadline, loop))
        try:
            transport, protocol = await loop.create_connection(
                lambda: httpsession.TimedHandler(loop=loop), sock=sock, **tls_args)
        except BaseException:
            sock.close()
            raise
        hop.transport = transport
        if ctx is not None:
            attempt.end()
            hop.tls = attempt.record_tls(transport)
        return protocol

    async def _via_proxy(self, hop: _Hop, method: str, target: URL, headers: list[tuple[str, str]],
                         body: bytes | None, ctx: ssl.SSLContext | None,
                         sni: str | None) -> aiohttp.ClientResponse:
        attempt = self.attempt
        attempt.note(f"connecting through proxy {URL(self.cfg.proxy_url).with_user(None)}")

        def connected(protocol: ResponseHandler) -> None:
            attempt.end()
            if ctx is not None and protocol.transport is not None:
                hop.tls = attempt.record_tls(protocol.transport)
            attempt.begin(r.PHASE_PROCESSING)

        attempt.begin(r.PHASE_CONNECT)
        extra = dict(proxy=self.cfg.proxy_url, ssl=ctx if ctx is not None else True)
        if ctx is not None and sni:
            extra["server_hostname"] = sni
        return await self._send(httpsession.HopConnection(None, connected), method, target, headers, body, extra)

    async def _send(self, connection: httpsession.HopConnection, method: str, target: URL,
                    headers: list[tuple[str, str]], body: bytes | None,
                    extra: dict | None) -> aiohttp.ClientResponse:
        if connection.protocol is not None:
            self.attempt.begin(r.PHASE_PROCESSING)
        return await httpsession.request(connection, method, target, headers, body, extra)

    # -- request details --
    def _host_for(self, url: URL, same_origin: bool) -> str:
        if same_origin:
            return self.check.hostname or self.prep.host_header or _host_header(url)
        return _host_header(url)

    def _headers(self, url: URL, host_header: str, same_origin: bool) -> list[tuple[str, str]]:
        """Credentials go only to the target's own origin, never to a host a redirect points at."""
        headers = list(self.prep.headers if same_origin else self.prep.cross_origin_headers)
        headers.append(("Host", host_header))
        if same_origin and not self.prep.user_authorization:
            auth = self._authorization(url)
            if auth is not None:
                headers.append(("Authorization", auth))
        return headers

    def _authorization(self, url: URL) -> str | None:
        """basic_auth / bearer_token (inline or from a file), else credentials given in the URL."""
        cfg = self.cfg
        if self.prep.authorization is not None:
            return self.prep.authorization
        try:
            if cfg.basic_auth is not None and cfg.basic_auth.password_file:
                return _basic(cfg.basic_auth.username, read_secret(cfg.basic_auth.password_file))
            if cfg.basic_auth is None and cfg.bearer_token_file:
                return f"Bearer {read_secret(cfg.bearer_token_file)}"
        except OSError as exc:
            self.attempt.note(f"cannot read credentials: {exc}")
            raise ProbeFailure(reason_for_exception(exc)) from None  # config_file_unreadable
        if url.raw_user:
            return _basic(url.user or "", url.password or "")
        return None

    def _sni(self, host: str, same_origin: bool) -> str | None:
        """tls_config.server_name, else the ?hostname= override or a configured Host header (on the
        target's own origin), else the URL host."""
        override = (self.check.hostname or self.prep.host_header) if same_origin else None
        return tlsutil.server_name(self.cfg.tls_config, override and _strip_port(override),
                                   ip_literal(host) or host)

    # -- the response --
    def _record_response(self, response: Reply) -> None:
        details = self.attempt.details
        version = f"{response.version.major}.{response.version.minor}"
        details[r.D_HTTP_STATUS] = response.status
        details[r.D_HTTP_VERSION] = float(version)
        length = response.content_length
        details[r.D_HTTP_CONTENT_LENGTH] = -1 if length is None else length
        self.attempt.note(f"received HTTP/{version} {response.status} {response.reason or ''}".rstrip())

    def _redirect_target(self, url: URL, response: Reply) -> URL | None:
        if not (self.cfg.follow_redirects and response.status in REDIRECT_STATUSES):
            return None
        location = response.headers.get("Location")
        if not location:
            return None
        try:
            target = url.join(URL(location))
        except ValueError:
            self.attempt.note(f"not following redirect to unparsable location {location!r}")
            return None
        if target.scheme not in _DEFAULT_PORTS or not target.raw_host:
            self.attempt.note(f"not following redirect to {location!r}")
            return None
        return target

    async def _evaluate(self, response: Reply) -> None:
        """Checks in blackbox's order; the first failure is the reason, the body is read regardless."""
        cfg, attempt, details = self.cfg, self.attempt, self.attempt.details
        details[r.D_FAILED_DUE_TO_REGEX] = 0
        reason = None
        if not self._status_ok(response.status):
            attempt.note(f"status {response.status} not in valid codes {self.prep.valid_text}")
            reason = r.HTTP_STATUS
        if reason is None and (problem := _header_problem(cfg, response.headers)):
            attempt.note(problem)
            details[r.D_FAILED_DUE_TO_REGEX] = 1
            reason = r.HTTP_HEADER_MISMATCH
        body, too_large = await self._read_body(response)
        if too_large and reason is None:
            reason = r.HTTP_BODY_TOO_LARGE
        if reason is None and body is not None and (problem := _body_problem(cfg, body)):
            attempt.note(problem)
            details[r.D_FAILED_DUE_TO_REGEX] = 1
            reason = r.HTTP_BODY_MISMATCH
        version = f"HTTP/{response.version.major}.{response.version.minor}"
        if reason is None and cfg.valid_http_versions and version not in cfg.valid_http_versions:
            attempt.note(f"{version} not in valid versions {', '.join(cfg.valid_http_versions)}")
            reason = r.HTTP_VERSION
        if reason is None:
            reason = self._tls_problem()
        if reason is not None:
            raise ProbeFailure(reason)

    def _status_ok(self, status: int) -> bool:
        codes = self.cfg.valid_status_codes
        return status in codes if codes else 200 <= status < 300

    def _tls_problem(self) -> str | None:
        used = self.attempt.details.get(r.D_TLS) == 1
        if used and self.cfg.fail_if_ssl:
            self.attempt.note("final response came over TLS and fail_if_ssl is set")
            return r.TLS_REQUIRED
        if not used and self.cfg.fail_if_not_ssl:
            self.attempt.note("final response came without TLS and fail_if_not_ssl is set")
            return r.TLS_REQUIRED
        return None

    async def _read_body(self, response: Reply) -> tuple[bytes | None, bool]:
        """Stream the body, never taking more than limit + 1 bytes; keep it only if regexes need it."""
        attempt, limit, keep = self.attempt, self.prep.limit, self.prep.keep_body
        attempt.begin(r.PHASE_TRANSFER)
        content = response.content
        parts: list[bytes] = []
        total = 0
        while chunk := await content.read(min(_CHUNK, limit + 1 - total)):
            total += len(chunk)
            if total > limit:
                attempt.end()
                attempt.details[r.D_HTTP_BODY_BYTES] = total
                what = "body_size_limit" if self.cfg.body_size_limit else "the safety cap"
                attempt.note(f"body exceeds {what} of {limit} bytes; stopped reading")
                return None, True
            if keep:
                parts.append(chunk)
        if isinstance(response, http1.Response):
            attempt.end_at_reply(response.last_arrival)  # the last bytes' arrival, not the loop's turn
        else:
            attempt.end()
        attempt.details[r.D_HTTP_BODY_BYTES] = total
        attempt.note(f"read {total} body bytes")
        return (b"".join(parts) if keep else None), False


def _header_problem(cfg: HTTPProbe, headers: CIMultiDictProxy[str]) -> str | None:
    for spec in cfg.fail_if_header_matches:
        values = headers.getall(spec.header, [])
        if not values and not spec.allow_missing:
            return f"header {spec.header} is missing"
        for value in values:
            if spec.regexp.search(value):
                return f"header {spec.header}: {value!r} matches {spec.regexp.pattern!r}"
    for spec in cfg.fail_if_header_not_matches:
        values = headers.getall(spec.header, [])
        if not values:
            if not spec.allow_missing:
                return f"header {spec.header} is missing"
            continue
        if not any(spec.regexp.search(value) for value in values):
            return f"header {spec.header}: no value matches {spec.regexp.pattern!r}"
    return None


def _body_problem(cfg: HTTPProbe, body: bytes) -> str | None:
    for rx in cfg.fail_if_body_matches_regexp:
        if rx.search(body):
            return f"body matches {rx.pattern!r}"
    for rx in cfg.fail_if_body_not_matches_regexp:
        if not rx.search(body):
            return f"body does not match {rx.pattern!r}"
    return None


def _redirect_method(status: int, method: str, body: bytes | None) -> tuple[str, bytes | None]:
    """Like browsers and Go: 303 (and 301/302 after a POST) continue as a body-less GET."""
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        return "GET", None
    return method, body


def _without_password(url: URL) -> URL:
    return url.with_password("<secret>") if url.password else url


# Cached: a scheduled check probes the same URL at the same address run after run, and building or printing
# a yarl URL each time is per-probe work that a hit avoids.
@functools.lru_cache(maxsize=4096)
def _shown_url(url: URL) -> str:
    return str(_without_password(url))


@functools.lru_cache(maxsize=4096)
def _request_url(url: URL, address: str) -> URL:
    return url.with_user(None).with_host(address)


def _policy_host(host: str) -> str:
    """The host as the probe policy's patterns see it (as for the target: no brackets or final dot)."""
    return host.strip("[]").rstrip(".").lower()


def _strip_port(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _is_redirect(response: Reply) -> bool:
    return response.status in REDIRECT_STATUSES and "Location" in response.headers

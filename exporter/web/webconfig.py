"""``--web.config.file``: TLS, basic auth and response headers, in the Prometheus exporter-toolkit format.

    tls_server_config:
      cert_file: /etc/outage-exporter/tls.crt
      key_file: /etc/outage-exporter/tls.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
      client_ca_file: /etc/outage-exporter/clients-ca.crt
      min_version: TLS12                              # TLS10 .. TLS13; default TLS12
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # Go names; TLS 1.2 and below only
      prefer_server_cipher_suites: true
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2b$12$...                          # bcrypt hash

Every endpoint requires the credentials except ``/-/healthy``, which liveness probes of orchestrators call
without any. Headers are added to every response. Keys are read strictly: an unknown key is an error that
names its YAML path, and exporter-toolkit keys this implementation cannot honour (``RequireAnyClientCert``,
``curve_preferences``, inline ``cert``/``key``, ``client_allowed_sans``) are refused rather than ignored.

A bcrypt check costs tens of milliseconds by design, so credentials that verified are remembered for
``CACHE_SECONDS`` (as a salted hash, never in clear) and a scrape every few seconds pays it once per
window; checks run in a worker thread, at most ``MAX_CONCURRENT_CHECKS`` at a time, so wrong passwords
cannot stall the event loop. Unknown users are checked against a dummy hash, so response time does not
tell which user names exist.

Reload (SIGHUP, POST /-/reload) re-reads the file: users and headers change at once, the certificate and
key are re-read from their files (rotation without restart). Other TLS settings (switching TLS on or off,
client authentication, the client CA, versions, ciphers) need a restart; a reload that changes them is
refused and the previous web configuration stays.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import bcrypt
from aiohttp import web

from exporter.config.errors import ConfigError, child_path, expected_error
from exporter.config.reading import check_readable, parse_yaml, read_bounded
from exporter.config.values import Section, as_bool, as_nonempty, as_str, choice, list_of

log = logging.getLogger("exporter.web.webconfig")

AUTH_EXEMPT_PATHS = frozenset({"/-/healthy"})
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 1024
MAX_CONCURRENT_CHECKS = 2
REALM = "outage-exporter"

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
             "cipher_suites", "prefer_server_cipher_suites")
_TLS_UNSUPPORTED = ("cert", "key", "client_ca", "curve_preferences", "client_allowed_sans")
_HTTP_KEYS = ("headers", "http2")
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_CLIENT_AUTH_UNSUPPORTED = ("RequestClientCert", "RequireAnyClientCert")  # Python cannot skip verification
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
             "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's cipher suite names (what exporter-toolkit files use) -> OpenSSL's.
_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# The headers exporter-toolkit lets a web config set, with the values it accepts (None: any).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


MAX_WEB_CONFIG_BYTES = 1 << 20  # a web config is a few lines; anything this large is a mistake

@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True, slots=True)
class WebConfig:
    tls: TLSServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    users: Mapping[str, bytes] = field(default_factory=dict)  # user name -> bcrypt hash
    source: str = ""


# --- loading -----------------------------------------------------------------------------------------------


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Read and validate a web config file (the TLS files are loaded too); raises ConfigError."""
    source = os.fspath(path)
    try:  # a regular file of bounded size only: a FIFO or /dev/zero here must not hang or exhaust anything
        text = read_bounded(source, MAX_WEB_CONFIG_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("", f"cannot read web config file {source}: {getattr(e, 'strerror', None) or e}") from None
    doc = parse_yaml(text, source)
    top = Section(doc, "", _TOP_KEYS)
    config = WebConfig(
        tls=top.get("tls_server_config", _tls, None),
        headers=top.get("http_server_config", _http, ()),
        users=top.get("basic_auth_users", _users, {}),
        source=source,
    )
    if config.tls is not None:
        server_context(config.tls)  # surfaces unreadable or mismatched certificate files now
    return config


def _tls(raw: Any, path: str) -> TLSServerConfig:
    s = Section(raw, path, _TLS_KEYS, unsupported=_TLS_UNSUPPORTED)
    client_auth = s.get("client_auth_type", _client_auth_type, "NoClientCert")
    tls = TLSServerConfig(
        cert_file=s.require("cert_file", _readable_file),
        key_file=s.require("key_file", _readable_file),
        client_auth_type=client_auth,
        client_ca_file=s.get("client_ca_file", _readable_file, None),
        min_version=s.get("min_version", choice(tuple(_VERSIONS)), "TLS12"),
        max_version=s.get("max_version", choice(tuple(_VERSIONS)), None),
        cipher_suites=s.get("cipher_suites", list_of(choice(tuple(_CIPHERS))), ()),
        prefer_server_cipher_suites=s.get("prefer_server_cipher_suites", as_bool, True),
    )
    if client_auth != "NoClientCert" and tls.client_ca_file is None:
        raise ConfigError(s.path_of("client_ca_file"), f"required with client_auth_type {client_auth}")
    if tls.max_version is not None and _VERSIONS[tls.max_version] < _VERSIONS[tls.min_version]:
        raise ConfigError(s.path_of("max_version"), f"{tls.max_version} is below min_version {tls.min_version}")
    return tls


def _client_auth_type(v: Any, p: str) -> str:
    s = as_str(v, p)
    if s in _CLIENT_AUTH_UNSUPPORTED:
        raise ConfigError(p, f'"{s}" is not supported (client certificates are always verified here); use '
                             "VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    return choice(tuple(_CLIENT_AUTH))(s, p)


def _readable_file(v: Any, p: str) -> str:
    s = as_nonempty(v, p)
    try:
        check_readable(s)
    except OSError as e:
        raise ConfigError(p, f"cannot read {s}: {e.strerror or e}") from None
    return s


def _http(raw: Any, path: str) -> tuple[tuple[str, str], ...]:
    s = Section(raw, path, _HTTP_KEYS)
    s.get("http2", as_bool, True)  # aiohttp serves HTTP/1.1 only; accepted so toolkit files load
    return s.get("headers", _headers, ())


def _headers(raw: Any, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise expected_error(raw, path, "a mapping of header name to value")
    out = []
    for name, value in raw.items():
        p = child_path(path, str(name))
        canonical = next((h for h in _HEADERS if h.lower() == str(name).lower()), None)
        if canonical is None:
            raise ConfigError(p, f'header "{name}" cannot be set here (allowed: {", ".join(_HEADERS)})')
        text = as_str(value, p)
        allowed = _HEADERS[canonical]
        if allowed is not None and text.lower() not in allowed:
            raise ConfigError(p, f'invalid value "{text}" (allowed: {", ".join(allowed)})')
        out.append((canonical, text))
    return tuple(out)


def _users(raw: Any, path: str) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        raise expected_error(raw, path, "a mapping of user name to bcrypt hash")
    users = {}
    for name, value in raw.items():
        p = child_path(path, str(name))
        if not isinstance(name, str) or not name or ":" in name:
            raise ConfigError(p, "user names must be non-empty strings without ':'")
        text = as_str(value, p)
        if not _BCRYPT_HASH.fullmatch(text):
            raise ConfigError(p, "expected a bcrypt hash ($2a$, $2b$ or $2y$ followed by 56 characters), not a "
                                 "clear-text password; create one with: htpasswd -nBC 10 '' | tr -d ':\\n'")
        users[name] = text.encode()
    return users


def server_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """The server-side SSLContext for ``tls``; raises ConfigError when the files do not load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    if tls.max_version is not None:
        ctx.maximum_version = _VERSIONS[tls.max_version]
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("tls_server_config", f"cannot load cert_file {tls.cert_file} with key_file "
                                               f"{tls.key_file}: {e}") from None
    ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError("tls_server_config.client_ca_file", f"cannot load {tls.client_ca_file}: {e}") from None
    if tls.cipher_suites:
        ctx.set_ciphers(":".join(_CIPHERS[c] for c in tls.cipher_suites))
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


# --- basic auth --------------------------------------------------------------------------------------------


class Credentials:
    """Checks user name and password against bcrypt hashes, remembering recent successes briefly."""

    def __init__(self, users: Mapping[str, bytes], *, ttl: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.users = dict(users)
        self.ttl = ttl
        self._clock = clock
        self._salt = secrets.token_bytes(16)
        self._verified: OrderedDict[bytes, float] = OrderedDict()  # salted digest -> expiry
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._dummy: bytes | None = None
        self.bcrypt_checks = 0  # how many bcrypt verifications ran (tests, debugging)

    def _key(self, user: str, password: str) -> bytes:
        return hashlib.sha256(self._salt + user.encode() + b"\0" + password.encode()).digest()

    async def verify(self, user: str, password: str) -> bool:
        key = self._key(user, password)
        expiry = self._verified.get(key)
        if expiry is not None and expiry > self._clock():
            return True
        hashed = self.users.get(user)
        async with self._slots:
            ok = await asyncio.to_thread(self._check, password, hashed)
        if ok and hashed is not None:
            self._verified[key] = self._clock() + self.ttl
            self._verified.move_to_end(key)
            while len(self._verified) > CACHE_ENTRIES:
                self._verified.popitem(last=False)
            return True
        return False

    def _check(self, password: str, hashed: bytes | None) -> bool:
        self.bcrypt_checks += 1
        target = hashed if hashed is not None else self._dummy_hash()
        try:
            return bcrypt.checkpw(password.encode(), target) and hashed is not None
        except ValueError:  # e.g. a password longer than bcrypt's 72 bytes
            return False

    def _dummy_hash(self) -> bytes:
        """A hash of the same cost as the configured ones: unknown users take as long as known ones."""
        if self._dummy is None:
            cost = min((int(h[4:6]) for h in self.users.values()), default=10)
            self._dummy = bcrypt.hashpw(secrets.token_bytes(16).hex().encode(), bcrypt.gensalt(rounds=cost))
        return self._dummy


def parse_basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


# --- the running web security ------------------------------------------------------------------------------


class WebSecurity:
    """The loaded web config applied to the application: middleware, response headers, SSL context."""

    def __init__(self, path: str | os.PathLike[str], *, on_load: Callable[[bool], None] | None = None) -> None:
        self.path = os.fspath(path)
        self._on_load = on_load
        self.config = load_web_config(self.path)
        self.ssl_context = server_context(self.config.tls) if self.config.tls is not None else None
        self.credentials = Credentials(self.config.users)
        if on_load is not None:
            on_load(True)

    def reload(self) -> bool:
        """Re-read the file; on any problem keep the current web config, log why and return False."""
        try:
            config = load_web_config(self.path)
            self._check_reloadable(config)
            if config.tls is not None and self.ssl_context is not None:
                self.ssl_context.load_cert_chain(config.tls.cert_file, config.tls.key_file)
        except (ConfigError, OSError, ssl.SSLError) as e:
            log.error("web config reload failed; keeping the previous one",
                      extra={"fields": {"file": self.path, "err": str(e)}})
            if self._on_load is not None:
                self._on_load(False)
            return False
        if config.users != self.config.users:
            self.credentials = Credentials(config.users)
        self.config = config
        if self._on_load is not None:
            self._on_load(True)
        return True

    def _check_reloadable(self, new: WebConfig) -> None:
        old = self.config.tls
        if (old is None) != (new.tls is None):
            raise ConfigError("tls_server_config", "turning TLS on or off needs a restart")
        if old is not None and new.tls is not None:
            same_files = dict(cert_file=old.cert_file, key_file=old.key_file)
            if replace(new.tls, **same_files) != old:
                raise ConfigError("tls_server_config", "only cert_file and key_file can change on reload; "
                                                       "other TLS settings need a restart")

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not self.config.users or request.path in AUTH_EXEMPT_PATHS:
            return await handler(request)
        given = parse_basic(request.headers.get("Authorization", ""))
        if given is not None and await self.credentials.verify(*given):
            return await handler(request)
        return web.Response(status=401, text="Unauthorized\n",
                            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in self.config.headers:
            response.headers[name] = value

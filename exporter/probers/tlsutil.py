"""TLS pieces shared by the http and tcp probers: cached client contexts and what a handshake tells us.

Building an ``SSLContext`` (loading CA bundles, client certificates) costs far more than a probe, so
contexts are built once per :class:`TLSConfig` and reused. The cache key also carries the size and
mtime of every file the config names, so a rotated CA or client certificate is picked up on the next
probe without a restart.

Certificate expiry is read from the DER the peer sent, with a small DER walker instead of a new
dependency: only ``tbsCertificate.validity.notAfter`` is needed.
"""

from __future__ import annotations

import calendar
import functools
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter.config.model import TLSConfig
from exporter.config.reading import check_readable
from exporter.probers.errors import ConfigFileUnreadable

_MIN_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_VERSION_LABELS = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
HTTP_ALPN = ("http/1.1",)

FileStamp = tuple[int, int] | None


def client_context(cfg: TLSConfig, *, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """The (shared, cached) client context for ``cfg``. Raises OSError / ssl.SSLError if files are bad."""
    if cfg.ca_file is None and cfg.cert_file is None and cfg.key_file is None:
        return _build(cfg, alpn, None, None, None)
    return _build(cfg, alpn, _stamp(cfg.ca_file), _stamp(cfg.cert_file), _stamp(cfg.key_file))


def _stamp(path: str | None) -> FileStamp:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None  # the build reports the missing file with a precise error
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=128)
def _build(cfg: TLSConfig, alpn: tuple[str, ...], ca: FileStamp, cert: FileStamp,
           key: FileStamp) -> ssl.SSLContext:
    """One context per (config, alpn, file versions); the stamps are only part of the cache key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cfg.ca_file:
        ca_file = cfg.ca_file  # like blackbox: ca_file replaces the system roots
        _load(ca_file, lambda: ctx.load_verify_locations(cafile=ca_file))
    else:
        ctx.load_default_certs()
    if cfg.cert_file:
        _load(cfg.key_file or cfg.cert_file, lambda: check_readable(cfg.key_file or cfg.cert_file or ""))
        _load(cfg.cert_file, lambda: ctx.load_cert_chain(cfg.cert_file or "", cfg.key_file))
    if cfg.min_version:
        ctx.minimum_version = _MIN_VERSIONS[cfg.min_version]
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def _load(file: str, load: Callable[[], object]) -> None:
    """Run ``load`` (which reads ``file``); a file that is gone, unreadable, not a regular file or not
    loadable raises ConfigFileUnreadable. Only regular files are opened: a FIFO would block the loop."""
    try:
        check_readable(file)
        load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigFileUnreadable(file, exc) from exc


def server_name(cfg: TLSConfig, *candidates: str | None) -> str | None:
    """SNI and verification name: tls_config.server_name wins, then the first non-empty candidate."""
    if cfg.server_name:
        return cfg.server_name
    for name in candidates:
        if name:
            return name.rstrip(".")
    return None


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What a completed handshake tells us; the source of the tls_version and cert_expiry details."""

    version: str  # "TLS 1.3", the label blackbox uses for probe_tls_version_info
    cert_expiry: float | None  # unix time of the earliest notAfter in the chain the peer sent
    protocol: str = ""  # OpenSSL's name, "TLSv1.3"
    cipher: str = ""

    def describe(self) -> str:
        expiry = "cert expiry unknown"
        if self.cert_expiry is not None:
            expiry = f"cert expires {format_time(self.cert_expiry)}"
        cipher = f" ({self.cipher})" if self.cipher else ""
        return f"TLS {self.protocol or self.version} established{cipher}, {expiry}"


def tls_info(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> TLSInfo:
    raw = ssl_object.version() or ""
    cipher = ssl_object.cipher()
    expiries = [e for der in peer_chain(ssl_object) if (e := cert_not_after(der)) is not None]
    return TLSInfo(version=_VERSION_LABELS.get(raw, raw), cert_expiry=min(expiries) if expiries else None,
                   protocol=raw, cipher=cipher[0] if cipher else "")


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """DER certificates as the peer sent them (leaf first), whether or not they were verified.

    Python 3.13 exposes the chain publicly; 3.11 and 3.12 have the same call on the C object. Without
    either, only the leaf is available.
    """
    public = getattr(ssl_object, "get_unverified_chain", None)
    if public is not None:
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in public() or ()]
    inner = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if inner is not None:
        return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in inner() or ()]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


@functools.lru_cache(maxsize=1024)
def cert_not_after(der: bytes) -> float | None:
    """notAfter of a DER X.509 certificate as unix time, or None if it cannot be parsed."""
    try:
        return _not_after(der)
    except (IndexError, ValueError):
        return None


def _not_after(der: bytes) -> float:
    _, cert, _ = _tlv(der, 0, 0x30)  # Certificate ::= SEQUENCE
    _, pos, _ = _tlv(der, cert, 0x30)  # tbsCertificate ::= SEQUENCE
    if der[pos] == 0xA0:  # [0] EXPLICIT version, absent for v1 certificates
        pos = _tlv(der, pos, 0xA0)[2]
    for tag in (0x02, 0x30, 0x30):  # serialNumber, signature AlgorithmIdentifier, issuer Name
        pos = _tlv(der, pos, tag)[2]
    _, validity, _ = _tlv(der, pos, 0x30)
    after = _tlv(der, validity, None)[2]  # skip notBefore
    tag, start, end = _tlv(der, after, None)
    return _asn1_time(tag, der[start:end].decode("ascii"))


def _tlv(der: bytes, pos: int, want: int | None) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``; checks the tag when ``want`` is set."""
    tag = der[pos]
    if want is not None and tag != want:
        raise ValueError(f"DER: expected tag {want:#x} at {pos}, found {tag:#x}")
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4:
            raise ValueError("DER: unsupported length encoding")
        length = int.from_bytes(der[pos:pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise ValueError("DER: element runs past the end")
    return tag, pos, pos + length


def _asn1_time(tag: int, text: str) -> float:
    """UTCTime (YYMMDDHHMMSSZ, RFC 5280 pivot at 1950) or GeneralizedTime (YYYYMMDDHHMMSSZ)."""
    if not text.endswith("Z"):
        raise ValueError(f"DER: time without Z: {text!r}")
    digits = text[:-1]
    if tag == 0x17 and len(digits) == 12:
        year = int(digits[:2])
        year += 1900 if year >= 50 else 2000
        rest = digits[2:]
    elif tag == 0x18 and len(digits) >= 14:
        year, rest = int(digits[:4]), digits[4:14]
    else:
        raise ValueError(f"DER: unsupported time {text!r}")
    month, day, hour, minute, second = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def format_time(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))

"""The one place where exceptions become failure reasons.

Probers catch broadly and call :func:`reason_for_exception`; they never pick reasons from exception
types themselves, so every prober reports the same failure the same way.
"""

from __future__ import annotations

import asyncio
import errno
import ssl

import aiohttp
import aiohttp.http_exceptions
import dns.exception
import dns.message
import dns.name

from exporter.config.probe_policy import ConnectRefused
from exporter.probers import result as r
from exporter.probers.http1 import ProtocolError


class ConfigFileUnreadable(OSError):
    """A file the module names (CA, client certificate or key, password or token file) cannot be used.

    Checked at load; raised when it broke afterwards (deleted, permissions, unmounted). The probe ends
    with ``config_file_unreadable``, which blames the exporter's setup rather than the target.
    """

    def __init__(self, file: str, cause: BaseException) -> None:
        problem = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(f"cannot read {file}: {problem}")
        self.file = file


# A deadline that expires in a phase means something different per phase: the connection never came
# up, the TLS handshake never finished, or the peer was too slow to answer.
_TIMEOUT_BY_PHASE = {
    r.PHASE_RESOLVE: r.DNS_TIMEOUT,
    r.PHASE_CONNECT: r.CONN_TIMEOUT,
    r.PHASE_TLS: r.TLS_HANDSHAKE,
    r.PHASE_PROCESSING: r.TIMEOUT,
    r.PHASE_TRANSFER: r.TIMEOUT,
}


def reason_for_exception(exc: BaseException, *, dns_context: bool = False, phase: str | None = None) -> str:
    """Map an exception raised while probing to a bounded failure reason.

    ``dns_context`` marks exceptions raised while talking to a DNS server, where a timeout means the
    server did not answer (dns_timeout) rather than the target's connection timing out. ``phase`` is the
    phase that was running (result.PHASE_*), which decides what a timeout means; after the last phase
    (e.g. waiting for a tcp expect line) pass any other string to get ``timeout``. Whatever goes wrong
    in the tls phase (timeout, alert, the peer hanging up) is a TLS failure.
    """
    reason = _reason(exc, dns_context, phase)
    if dns_context and reason in (r.CONN_REFUSED, r.CONN_ERROR):
        return r.DNS_UNREACHABLE  # the DNS server's port or network refused us: say it is DNS
    if phase == r.PHASE_TLS and reason == r.CONN_RESET:
        return r.TLS_HANDSHAKE  # the peer hung up mid-handshake: a TLS rejection without an alert
    return reason


def _reason(exc: BaseException, dns_context: bool, phase: str | None) -> str:
    if isinstance(exc, ConfigFileUnreadable):  # first: it is an OSError, but not the network's
        return r.CONFIG_FILE_UNREADABLE
    if isinstance(exc, dns.exception.Timeout | asyncio.TimeoutError | TimeoutError):
        if dns_context:
            return r.DNS_TIMEOUT
        return r.CONN_TIMEOUT if phase is None else _TIMEOUT_BY_PHASE.get(phase, r.TIMEOUT)
    if isinstance(exc, aiohttp.ClientError | aiohttp.http_exceptions.HttpProcessingError):
        reason = _aiohttp_reason(exc)
        if reason is not None:
            return reason
    if isinstance(exc, ProtocolError):
        return r.HTTP_PROTOCOL  # the response could not be parsed
    if isinstance(exc, dns.message.Truncated):
        return r.DNS_MALFORMED
    if isinstance(exc, dns.exception.FormError | dns.exception.SyntaxError | dns.name.NameTooLong |
                  dns.exception.TooBig | dns.message.UnknownHeaderField):
        return r.DNS_MALFORMED
    if isinstance(exc, dns.exception.UnexpectedEnd | dns.exception.DNSException):
        return r.DNS_MALFORMED
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _cert_reason(exc)
    if isinstance(exc, ssl.SSLError):
        return r.TLS_HANDSHAKE
    if isinstance(exc, ConnectRefused):  # before OSError: the /probe policy, not the network, said no
        return r.POLICY_REFUSED
    if isinstance(exc, ConnectionRefusedError):
        return r.CONN_REFUSED
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return r.CONN_RESET
    if isinstance(exc, EOFError | asyncio.IncompleteReadError):
        return r.DNS_MALFORMED if dns_context else r.CONN_RESET
    if isinstance(exc, OSError):
        if exc.errno == errno.ECONNREFUSED:
            return r.CONN_REFUSED
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return r.CONN_RESET
        if exc.errno == errno.ETIMEDOUT:
            return r.DNS_TIMEOUT if dns_context else r.CONN_TIMEOUT
        return r.CONN_ERROR
    return r.INTERNAL


def _aiohttp_reason(exc: Exception) -> str | None:
    """aiohttp's own exception types; None lets the generic OSError / ssl mapping below decide."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _cert_reason(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return r.CONN_ERROR  # the proxy refused to open a tunnel
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return r.CONN_RESET
    if isinstance(exc, aiohttp.ClientPayloadError):
        # aiohttp reports a peer that hung up mid-body as "Response payload is not completed"
        truncated = isinstance(exc.__cause__, aiohttp.http_exceptions.ContentLengthError)
        return r.CONN_RESET if truncated or "not completed" in str(exc) else r.HTTP_PROTOCOL
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.http_exceptions.HttpProcessingError):
        return r.HTTP_PROTOCOL  # the response could not be parsed
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return r.CONN_ERROR
    return None


def _cert_reason(exc: BaseException) -> str:
    code = getattr(exc, "verify_code", None)
    message = (getattr(exc, "verify_message", "") or str(exc)).lower()
    if code == 10 or "expired" in message:  # X509_V_ERR_CERT_HAS_EXPIRED
        return r.TLS_CERT_EXPIRED
    return r.TLS_CERT_INVALID

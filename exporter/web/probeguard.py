"""Applying the ``probe:`` policy to one /probe request.

Three checkpoints:

1. Before the probe, on the request: the target must match one of the module's ``allow`` patterns, and an
   IP target must not be in a refused address class. No name is looked up here (the probe does that, and
   one lookup per probe keeps its DNS timings and load honest).
2. During the probe, on every connection (:class:`~exporter.config.probe_policy.ConnectGuard`): the HTTP
   and TCP probers check each address right before connecting, after their own lookup and on every
   redirect hop, so a name that resolves to a metadata address, a DNS answer that changed (rebinding) or
   a redirect to a link-local address is stopped before any packet is sent. A module allowed only through
   an address pattern (``10.0.0.0/8``) has each connected address checked against those networks. Each
   redirect hop is matched against the allow list too, before its name is looked up; a refusal there
   ends the probe as a failure (reason ``policy_refused``) instead of refusing the request, since the
   target itself was allowed and probed.
3. After the probe, on the address it used (``details["address"]``): DNS probes of a server given by name
   are judged here, since the DNS prober is not guarded; the query has then been sent, but the result is
   withheld, so the caller learns nothing from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from exporter.checks import Check
from exporter.config.probe_policy import (
    NOT_ADMITTED,
    REFUSED_BLOCKED_ADDRESS,
    REFUSED_NOT_ALLOWED,
    ConnectGuard,
    Endpoint,
    ProbePolicy,
    admit,
    parse_ip,
)
from exporter.logs import mask_secrets
from exporter.probers import result as r
from exporter.probers.result import ProbeResult
from exporter.probers.tcp import split_host_port

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # label value of outage_exporter_probe_requests_refused_total
    message: str  # response body and log text; never carries credentials
    on_redirect: bool = False  # made on a redirect hop: counted and logged, the probe reports a failure


def endpoint_of(check: Check) -> Endpoint | None:
    """Host, port and target text of what ``check`` connects to; None when the target cannot be parsed
    (the probe then fails without connecting anywhere)."""
    try:
        if check.dns_server is not None:
            server = check.dns_server
            return Endpoint(_host(server.host), server.port, server.name)
        if check.prober == "http":
            url = URL(check.target)
            if url.scheme not in _DEFAULT_PORTS or not url.raw_host:
                return None
            port = url.port or _DEFAULT_PORTS[url.scheme]
            return Endpoint(_host(url.raw_host), port, str(url.with_user(None)))
        host, port = split_host_port(check.target)
        return Endpoint(_host(host), port, check.target)
    except ValueError:
        return None


def _host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def pre_check(policy: ProbePolicy, module: str, check: Check) -> Refusal | ConnectGuard:
    """Refuse the request, or return the guard to hold while it is probed."""
    patterns = policy.patterns_for(module)
    endpoint = endpoint_of(check)
    if endpoint is None:
        if patterns is not None:
            return Refusal(REFUSED_NOT_ALLOWED, f'target "{mask_secrets(check.target)}" cannot be parsed, so it '
                                                f'cannot match the allow list of module "{module}"')
        return ConnectGuard(policy)
    literal = parse_ip(endpoint.host)
    if literal is not None:
        why = policy.blocked(literal)
        if why is not None:
            return Refusal(REFUSED_BLOCKED_ADDRESS, f"{literal} is a {why}; refused unless "
                                                    f"probe.{_switch(why)} is true")
    admitted = admit(patterns, endpoint)
    if admitted is not NOT_ADMITTED:  # networks (if any) are judged at connect time, on every hop
        return ConnectGuard(policy, networks=admitted, port=endpoint.port, patterns=patterns)
    return Refusal(REFUSED_NOT_ALLOWED, f'target "{mask_secrets(endpoint.target)}" is not in the allow list of '
                                        f'module "{module}" (probe.allow)')


def during_check(guard: ConnectGuard) -> Refusal | None:
    """The refusal the guard made while the probe ran, if it made one."""
    if guard.refused is None or guard.refused_reason is None:
        return None
    if guard.redirected:
        return Refusal(guard.refused_reason, f"a redirect was not followed: {guard.refused}", on_redirect=True)
    return Refusal(guard.refused_reason, f"the probe was stopped before connecting: {guard.refused}")


def post_check(guard: ConnectGuard, result: ProbeResult) -> Refusal | None:
    """Withhold a result whose probe used an address the guard would have refused (unguarded DNS probes)."""
    used = result.details.get(r.D_ADDRESS)
    if not isinstance(used, str) or parse_ip(used) is None:
        return None
    try:
        guard.check(used)
    except PermissionError:
        pass
    if guard.refused is None or guard.refused_reason is None:
        return None
    return Refusal(guard.refused_reason, f"the probe reached {guard.refused}; its result is withheld")


def _switch(why: str) -> str:
    return "allow_cloud_metadata" if "metadata" in why else "allow_link_local"

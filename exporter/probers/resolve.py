"""Hostname -> addresses through a region's resolvers, fresh on every probe (no cache across probes).

Every prober that connects to a named host (http, tcp) resolves through here, so a DNS outage shows up
as the same DNS failure reason whichever prober saw it, and the resolve phase is reported the same way.
Resolvers are asked in order like a stub resolver: an answer (addresses or NXDOMAIN) ends the search;
SERVFAIL, REFUSED, timeouts and garbage move on to the next resolver, each attempt getting an equal
share of the time left.

Answers are read by the same parser as the DNS prober's (dnsanswer.parse: garbage is ``dns_malformed``
on both paths), and only addresses that answer the question are used: class IN, owned by the name or a
name its CNAME chain reaches. Anything else is ignored as a resolver ignores it, so an answer holding
only such records is ``dns_no_answer``, as is a CNAME chain that loops or runs too long.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.message
import dns.rcode

from exporter.config.model import Resolver
from exporter.probers import clock, dnsanswer
from exporter.probers import result as r
from exporter.probers.dnsclient import exchange, rcode_reason
from exporter.probers.result import ProbeLog

RESERVE_SECONDS = 0.05
_LOCALHOST = {"localhost": ("127.0.0.1", "::1"), "localhost.": ("127.0.0.1", "::1")}


@dataclass(frozen=True, slots=True)
class Resolution:
    addresses: tuple[str, ...] = ()  # best first: preferred family, then the other if fallback allowed
    reason: str | None = None  # failure reason when addresses is empty
    resolver: str = ""  # name of the resolver whose answer was used (or that failed last)
    looked_up: bool = False  # False for IP literals and localhost: no resolve phase to report


@functools.lru_cache(maxsize=4096)  # asked for every probe of a check, with the same few hosts
def ip_literal(host: str) -> str | None:
    """The address if ``host`` is an IP literal (brackets allowed for IPv6), else None."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        return None


def family_of(address: str) -> int:
    return 6 if ":" in address else 4


async def resolve(
    host: str,
    resolvers: Sequence[Resolver],
    *,
    prefer: str = "ip4",
    fallback: bool = True,
    deadline: float,
    log: ProbeLog,
) -> Resolution:
    """Resolve ``host``; never raises. See the module docstring for the search order."""
    literal = ip_literal(host)
    if literal is not None:
        return Resolution(addresses=(literal,))
    if host.lower() in _LOCALHOST:
        v4, v6 = _LOCALHOST[host.lower()]
        return Resolution(addresses=(v4, v6) if prefer == "ip4" else (v6, v4))
    loop = asyncio.get_running_loop()
    if not resolvers:
        log(clock.now(), f"no resolvers configured to resolve {host}")
        return Resolution(reason=r.DNS_TIMEOUT, looked_up=True)

    first, second = ("A", "AAAA") if prefer == "ip4" else ("AAAA", "A")
    qtypes = (first, second) if fallback else (first,)
    first_failure: tuple[str, str] | None = None
    for i, server in enumerate(resolvers):
        share = (deadline - loop.time()) / (len(resolvers) - i)
        # Stop a little before the probe's deadline so the verdict is ours (e.g. the first resolver's
        # SERVFAIL) rather than a bare timeout from the caller's deadline guard.
        attempt_deadline = min(loop.time() + share, deadline - min(RESERVE_SECONDS, share / 10))
        addresses: list[str] = []
        failure: str | None = None
        for qtype in qtypes:
            got, failure = await _query(host, qtype, server, attempt_deadline, log)
            if failure is not None:
                break
            addresses.extend(got)
            if addresses:
                break
        if failure is None:
            if addresses:
                log(clock.now(), f"resolved {host} via {server.name}: {', '.join(addresses)}")
                return Resolution(addresses=tuple(addresses), resolver=server.name, looked_up=True)
            log(clock.now(), f"{host}: no {'/'.join(qtypes)} records (NODATA) via {server.name}")
            return Resolution(reason=r.DNS_NO_ANSWER, resolver=server.name, looked_up=True)
        if failure == r.DNS_NXDOMAIN:
            return Resolution(reason=failure, resolver=server.name, looked_up=True)
        if first_failure is None:
            first_failure = (failure, server.name)
        if loop.time() >= deadline:
            break
    assert first_failure is not None
    return Resolution(reason=first_failure[0], resolver=first_failure[1], looked_up=True)


async def _query(host: str, qtype: str, server: Resolver, deadline: float,
                 log: ProbeLog) -> tuple[list[str], str | None]:
    query = dns.message.make_query(host, qtype, use_edns=0, payload=1232)
    ex = await exchange(query, server, transport="udp", deadline=deadline, log=log)
    if ex.response is None:
        return [], ex.reason or r.DNS_TIMEOUT
    rcode = ex.response.rcode()
    reason = rcode_reason(rcode)
    if reason is not None:
        log(clock.now(), f"{host} {qtype} via {server.name}: {dns.rcode.to_text(rcode)}")
        return [], reason
    out, looped = dnsanswer.addresses(ex.response, dnsanswer.question_of(ex.query or query))
    if looped:
        log(clock.now(), f"{host} {qtype} via {server.name}: the CNAME chain loops or is longer than "
                         f"{dnsanswer.MAX_CNAME_CHAIN}")
        return [], r.DNS_NO_ANSWER
    return out, None

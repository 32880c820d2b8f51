"""Which nameservers serve a zone: discovery for authoritative checks, and the per-check nameserver plans.

A discovery run asks two sources at once:

- the region's **resolvers**, recursively, for the zone's NS records (what the zone says about itself);
- the **parent zone's servers**, recursion off, for the delegation (NS records and glue addresses): the
  servers listed in ``authoritative.parents``, or else the nameservers of the closest enclosing zone,
  found through the resolvers.

The NS names of both are merged; each name takes its glue addresses when the parent gave some, otherwise
its A and AAAA records through the resolvers. A source that fails contributes what it said last time, and
a name whose addresses cannot be looked up keeps its previous addresses, so a resolver outage does not
look like nameservers being removed. The run succeeds when at least one source named a nameserver.

Discovery is not done on every probe. :class:`Plans` keeps, per check, the current nameserver set and
when it was last discovered; the authoritative prober asks it for the set and lets it re-discover when
``rediscover_interval`` has passed (see probers/authoritative.py). A set that changes is counted and
logged, with the names and addresses added and removed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from exporter.checks import Check
from exporter.config.model import AuthoritativeCheck, Resolver
from exporter.probers import dnsanswer
from exporter.probers import result as r
from exporter.probers.dnsclient import exchange, rcode_reason
from exporter.probers.resolve import family_of
from exporter.probers.result import ProbeLog

log = logging.getLogger("exporter.discovery")

EDNS_PAYLOAD = 1232
MAX_PARENT_NAMES = 4  # parent nameservers looked up (by name) when the parents are not configured
IDLE_SECONDS = 6 * 3600  # a plan no probe asked for in this long is forgotten (its check was unloaded)
SOURCE_RESOLVERS = "resolvers"
SOURCE_PARENT = "parent"
_FAMILY = {"ip4": 4, "ip6": 6}
_RRTYPE = {"ip4": dns.rdatatype.A, "ip6": dns.rdatatype.AAAA}


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """One nameserver address to ask."""

    nameserver: str  # NS name without the final dot; the address text for an unnamed static entry
    address: str  # IP literal
    port: int = 53

    @property
    def label(self) -> str:
        """The ``address`` label value: the IP, with the port when it is not 53."""
        if self.port == 53:
            return self.address
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @property
    def server(self) -> Resolver:
        return Resolver(name=self.label, host=self.address, port=self.port)


@dataclass(frozen=True, slots=True)
class Found:
    """The outcome of one discovery run."""

    targets: tuple[Target, ...]  # sorted
    answers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # source -> NS names it gave
    addresses: dict[str, tuple[str, ...]] = field(default_factory=dict)  # NS name -> addresses used
    success: bool = False  # a source named at least one nameserver in this run
    reason: str | None = None  # why no source did (when not success)


def static_targets(settings: AuthoritativeCheck) -> tuple[Target, ...]:
    """The targets of a static ``nameservers`` list."""
    out = []
    for ns in settings.nameservers:
        target = Target(ns.name, ns.address, ns.port)
        out.append(target if ns.name else Target(target.label, ns.address, ns.port))
    return tuple(sorted(set(out)))


async def discover(settings: AuthoritativeCheck, resolvers: Sequence[Resolver], *, deadline: float,
                   log: ProbeLog, previous: Found | None = None) -> Found:
    """One discovery run for ``settings.zone``; never raises for network trouble."""
    zone = dns.name.from_text(settings.zone)
    (own, own_reason), (delegation, glue, parent_reason) = await asyncio.gather(
        _from_resolvers(zone, resolvers, deadline, log),
        _from_parent(zone, settings, resolvers, deadline, log),
    )
    answers: dict[str, tuple[str, ...]] = {}
    success = False
    for source, names in ((SOURCE_RESOLVERS, own), (SOURCE_PARENT, delegation)):
        if names:
            answers[source] = names
            success = True
        elif previous is not None and source in previous.answers:
            answers[source] = previous.answers[source]
            _say(log, f"{source}: no answer, keeping its previous nameservers")
    names = sorted({n for source_names in answers.values() for n in source_names})
    addresses = await _addresses(names, glue, settings, resolvers, deadline, log, previous)
    targets = tuple(sorted(Target(name, address, settings.port)
                           for name in names for address in addresses.get(name, ())))
    reason = None if success else (parent_reason or own_reason or r.DNS_NO_ANSWER)  # the parent's word first
    return Found(targets=targets, answers=answers, addresses=addresses, success=success, reason=reason)


# --- asking ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    response: dns.message.Message | None
    reason: str | None  # why no usable response arrived
    server: str = ""


async def _ask(name: dns.name.Name, rdtype: int, servers: Sequence[Resolver], *, recursion: bool,
               deadline: float, log: ProbeLog) -> _Reply:
    """Ask each server in turn (an equal share of the time left each) until one answers NOERROR or
    NXDOMAIN; SERVFAIL, REFUSED, other rcodes, timeouts and garbage move on to the next."""
    loop = asyncio.get_running_loop()
    first: _Reply | None = None
    for i, server in enumerate(servers):
        if loop.time() >= deadline:
            break
        attempt_deadline = loop.time() + (deadline - loop.time()) / (len(servers) - i)
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        if not recursion:
            query.flags &= ~dns.flags.RD
        ex = await exchange(query, server, transport="udp", deadline=attempt_deadline, log=log)
        reply = _Reply(ex.response, ex.reason or (None if ex.response is not None else r.DNS_TIMEOUT),
                       server.name)
        if ex.response is not None:
            rcode = ex.response.rcode()
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return reply
            reply = _Reply(None, rcode_reason(rcode) or r.DNS_RCODE, server.name)
            _say(log, f"{_text(name)} {dns.rdatatype.to_text(rdtype)} via {server.name}: "
                      f"{dns.rcode.to_text(rcode)}")
        first = first or reply
    return first or _Reply(None, r.DNS_TIMEOUT)


def _ns_names(response: dns.message.Message, zone: dns.name.Name) -> tuple[str, ...]:
    """NS names for ``zone`` in the answer (an authoritative answer) or authority (a referral) section."""
    for section in (response.answer, response.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.NS and rrset.name == zone and rrset.rdclass == dns.rdataclass.IN:
                return tuple(sorted({_text(rd.target) for rd in rrset}))
    return ()


async def _from_resolvers(zone: dns.name.Name, resolvers: Sequence[Resolver], deadline: float,
                          log: ProbeLog) -> tuple[tuple[str, ...], str | None]:
    """The zone's own NS records through the region's resolvers: (names, failure reason)."""
    if not resolvers:
        return (), r.DNS_TIMEOUT
    reply = await _ask(zone, dns.rdatatype.NS, resolvers, recursion=True, deadline=deadline, log=log)
    if reply.response is None:
        _say(log, f"NS {_text(zone)} via resolvers failed: {reply.reason}")
        return (), reply.reason
    names = _ns_names(reply.response, zone)
    if not names:
        reason = r.DNS_NXDOMAIN if reply.response.rcode() == dns.rcode.NXDOMAIN else r.DNS_NO_ANSWER
        _say(log, f"NS {_text(zone)} via {reply.server}: no NS records ({reason})")
        return (), reason
    _say(log, f"NS {_text(zone)} via {reply.server}: {', '.join(names)}")
    return names, None


async def _from_parent(zone: dns.name.Name, settings: AuthoritativeCheck, resolvers: Sequence[Resolver],
                       deadline: float, log: ProbeLog) -> tuple[tuple[str, ...], dict[str, list[str]], str | None]:
    """The delegation from the parent zone: (NS names, glue addresses by name, failure reason)."""
    parents, reason = (list(settings.parents), None) if settings.parents else await _parent_servers(
        zone, settings, resolvers, deadline, log)
    if not parents:
        return (), {}, reason
    reply = await _ask(zone, dns.rdatatype.NS, parents, recursion=False, deadline=deadline, log=log)
    if reply.response is None:
        _say(log, f"delegation of {_text(zone)} from the parent failed: {reply.reason}")
        return (), {}, reply.reason
    names = _ns_names(reply.response, zone)
    if not names:
        reason = r.DNS_NXDOMAIN if reply.response.rcode() == dns.rcode.NXDOMAIN else r.DNS_NO_ANSWER
        _say(log, f"parent {reply.server} does not delegate {_text(zone)} ({reason})")
        return (), {}, reason
    glue: dict[str, list[str]] = {}
    for rrset in reply.response.additional:
        if (rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and rrset.rdclass == dns.rdataclass.IN
                and _text(rrset.name) in names):
            glue.setdefault(_text(rrset.name), []).extend(rd.address for rd in rrset)
    shown = ", ".join(f"{n} ({' '.join(glue[n])})" if n in glue else n for n in names)
    _say(log, f"delegation of {_text(zone)} from parent {reply.server}: {shown}")
    return names, glue, None


async def _parent_servers(zone: dns.name.Name, settings: AuthoritativeCheck, resolvers: Sequence[Resolver],
                          deadline: float, log: ProbeLog) -> tuple[list[Resolver], str | None]:
    """Addresses of the nameservers of the closest zone enclosing ``zone``, through the resolvers."""
    if not resolvers:
        return [], r.DNS_TIMEOUT
    candidate = zone.parent()
    while True:
        reply = await _ask(candidate, dns.rdatatype.NS, resolvers, recursion=True, deadline=deadline, log=log)
        if reply.response is None:
            _say(log, f"finding the parent zone of {_text(zone)}: NS {_text(candidate)} failed: {reply.reason}")
            return [], reply.reason
        names = _ns_names(reply.response, candidate)
        if names:
            break
        if candidate == dns.name.root:
            return [], r.DNS_NO_ANSWER
        candidate = candidate.parent()  # not a zone cut (or no such name): look one level up
    names = names[:MAX_PARENT_NAMES]
    looked_up = await asyncio.gather(*(_lookup(name, settings.ip_protocols, resolvers, deadline, log)
                                       for name in names))
    servers = [Resolver(name=Target(name, a, settings.port).label, host=a, port=settings.port)
               for name, (addresses, _) in zip(names, looked_up, strict=True) for a in addresses]
    if not servers:
        return [], next((why for _, why in looked_up if why), r.DNS_NO_ANSWER)
    _say(log, f"parent zone {_text(candidate)}: {', '.join(s.name for s in servers)}")
    return servers, None


async def _addresses(names: Sequence[str], glue: dict[str, list[str]], settings: AuthoritativeCheck,
                     resolvers: Sequence[Resolver], deadline: float, log: ProbeLog,
                     previous: Found | None) -> dict[str, tuple[str, ...]]:
    """Addresses per NS name: glue when the parent gave some, else A/AAAA through the resolvers."""
    families = {_FAMILY[p] for p in settings.ip_protocols}
    out: dict[str, tuple[str, ...]] = {}
    missing = []
    for name in names:
        kept = tuple(sorted({a for a in glue.get(name, ()) if family_of(a) in families}))
        if kept:
            out[name] = kept
        else:
            missing.append(name)
    looked_up = await asyncio.gather(*(
        _lookup(name, settings.ip_protocols, resolvers, deadline, log) for name in missing))
    for name, (addresses, reason) in zip(missing, looked_up, strict=True):
        if addresses:
            out[name] = addresses
        elif previous is not None and previous.addresses.get(name):
            out[name] = previous.addresses[name]
            _say(log, f"{name}: no address ({reason}), keeping {', '.join(out[name])}")
        else:
            _say(log, f"{name}: no address ({reason}); it cannot be asked")
    return out


async def _lookup(name: str, protocols: Sequence[str], resolvers: Sequence[Resolver], deadline: float,
                  log: ProbeLog) -> tuple[tuple[str, ...], str | None]:
    """A and/or AAAA of a nameserver through the resolvers: (addresses, reason when there are none)."""
    if not resolvers:
        return (), r.DNS_TIMEOUT
    qname = dns.name.from_text(name)
    replies = await asyncio.gather(*(
        _ask(qname, _RRTYPE[p], resolvers, recursion=True, deadline=deadline, log=log) for p in protocols))
    addresses: set[str] = set()
    reason = None
    for protocol, reply in zip(protocols, replies, strict=True):
        if reply.response is None:
            reason = reason or reply.reason
            continue
        found = set(dnsanswer.addresses(reply.response, (qname.to_digestable(), int(_RRTYPE[protocol]),
                                                         int(dns.rdataclass.IN)))[0])
        addresses |= found
        if not found and reason is None:
            reason = r.DNS_NXDOMAIN if reply.response.rcode() == dns.rcode.NXDOMAIN else r.DNS_NO_ANSWER
    return tuple(sorted(addresses)), None if addresses else reason or r.DNS_NO_ANSWER


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() or "."


def _say(probe_log: ProbeLog, message: str) -> None:
    probe_log(asyncio.get_running_loop().time(), message)


# --- plans: the nameserver set of each authoritative check ----------------------------------------------


@dataclass(slots=True)
class Plan:
    """The nameservers one authoritative check asks, and when and how they were last discovered."""

    settings: AuthoritativeCheck
    resolvers: tuple[Resolver, ...]
    targets: tuple[Target, ...] = ()
    found: Found | None = None  # the latest discovery run
    discovered_at: float = -math.inf  # loop time the latest discovery finished
    last_discovery: float = 0.0  # unix time of the same (0 = never, or a static list)
    changes: int = 0  # discoveries that changed the set (the first one does not count)
    last_used: float = 0.0  # loop time a probe last asked for this plan
    running: bool = False

    @property
    def static(self) -> bool:
        return bool(self.settings.nameservers)

    @property
    def success(self) -> bool | None:
        """Whether the latest discovery succeeded; None for a static list or before the first one."""
        return None if self.static or self.found is None else self.found.success

    def due(self, now: float) -> bool:
        """Whether a discovery should run now: every rediscover_interval, and on every probe while no
        nameserver is known yet (there is nothing else to ask); never for a static list, nor twice at once."""
        if self.static or self.running:
            return False
        return not self.targets or now - self.discovered_at >= self.settings.rediscover_interval


class Plans:
    """Nameserver plans by check key. Plain data: what a probe of the check needs to know between runs."""

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def plan(self, check: Check, now: float) -> Plan:
        """The plan of an authoritative check, started afresh when its settings or resolvers changed
        (the change counter carries over: it belongs to the check's identity, like every counter)."""
        assert check.authoritative is not None
        plan = self._plans.get(check.key)
        if plan is None or plan.settings != check.authoritative or plan.resolvers != check.resolvers:
            self._forget_idle(now)
            plan = Plan(check.authoritative, check.resolvers, changes=plan.changes if plan else 0)
            if plan.static:
                plan.targets = static_targets(check.authoritative)
            self._plans[check.key] = plan
        plan.last_used = now
        return plan

    async def refresh(self, check: Check, plan: Plan, *, deadline: float, probe_log: ProbeLog) -> None:
        """Run one discovery for ``plan`` and adopt its result; a changed set is counted and logged."""
        loop = asyncio.get_running_loop()
        plan.running = True
        try:
            found = await discover(plan.settings, plan.resolvers, deadline=deadline, log=probe_log,
                                   previous=plan.found)
        finally:
            plan.running = False
        plan.found, plan.discovered_at, plan.last_discovery = found, loop.time(), time.time()
        if not found.targets and plan.targets:
            why = found.reason or "no address for any name"
            _say(probe_log, f"discovery found no nameserver address ({why}); keeping the previous set")
            return
        if found.targets != plan.targets:
            first = not plan.targets
            _log_change(check, plan.targets, found.targets, first=first, probe_log=probe_log)
            if not first:
                plan.changes += 1
            plan.targets = found.targets

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, p in self._plans.items() if now - p.last_used > IDLE_SECONDS]:
            del self._plans[key]


def _log_change(check: Check, old: tuple[Target, ...], new: tuple[Target, ...], *, first: bool,
                probe_log: ProbeLog) -> None:
    added = sorted(f"{t.nameserver}/{t.label}" for t in set(new) - set(old))
    removed = sorted(f"{t.nameserver}/{t.label}" for t in set(old) - set(new))
    fields = {"service": check.service, "region": check.region, "check": check.check, "zone": check.target,
              "nameservers": len(new), "added": " ".join(added), "removed": " ".join(removed)}
    if first:
        log.debug("nameservers discovered", extra={"fields": fields})
        _say(probe_log, f"nameservers: {' '.join(added) or 'none'}")
    else:
        log.warning("nameserver set changed", extra={"fields": fields})
        _say(probe_log, f"nameserver set changed: added {' '.join(added) or 'none'}; "
                        f"removed {' '.join(removed) or 'none'}")


_PLANS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Plans] = weakref.WeakKeyDictionary()


def plans() -> Plans:
    """The running event loop's plans (one per loop, like the HTTP prober's session)."""
    loop = asyncio.get_running_loop()
    found = _PLANS.get(loop)
    if found is None:
        found = _PLANS[loop] = Plans()
    return found

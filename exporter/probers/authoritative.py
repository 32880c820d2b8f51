"""Authoritative nameserver prober: ask every nameserver address of a zone directly, recursion off.

A check's nameservers come from its plan (exporter.discovery): a static list, or the set discovered
through the region's resolvers and the parent's delegation. When the plan is due for re-discovery the
discovery runs alongside the queries of this probe and its result is used from the next probe on; only
a check that has no nameserver yet waits for discovery first (with half of the time available).

Each address is asked over each configured transport for the zone's SOA and then, if that worked, for
every extra ``query_names`` entry (type A). An address/transport is *up* when every answer is NOERROR
with the AA flag (and the SOA is in the answer); otherwise its reason is the first problem met:
no answer (dns_timeout, conn_refused, ...), an error rcode (dns_refused, dns_servfail, ...), no AA
(dns_not_authoritative) or no record (dns_no_answer).

The check itself succeeds when a majority of the addresses answer over at least one transport; it fails
with the commonest reason among the others. The per-address results travel in ``ProbeResult.zone``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from exporter import discovery
from exporter.checks import Check
from exporter.config.model import AuthoritativeCheck
from exporter.discovery import Plan, Target
from exporter.probers import clock
from exporter.probers import result as r
from exporter.probers.dnsclient import exchange, rcode_reason
from exporter.probers.result import NameserverResult, ProbeLog, ProbeResult, ZoneReport, finish

logger = logging.getLogger("exporter.probers.authoritative")

EDNS_PAYLOAD = 1232
_REASON_ORDER = {reason: i for i, reason in enumerate(r.REASONS)}


async def probe(check: Check, *, deadline: float) -> ProbeResult:
    """Probe every nameserver address of ``check``'s zone; returns by ``deadline`` and never raises."""
    run = _Run(check)
    try:
        return await run.go(deadline)
    except Exception as exc:  # noqa: BLE001 - a bug must not kill the scheduler; report it instead
        logger.exception("authoritative probe of %s crashed", check.target)
        run.say(f"internal error: {type(exc).__name__}: {exc}")
        return run.done(r.INTERNAL)


class _Run:
    __slots__ = ("check", "loop", "started", "clock_started", "log")

    def __init__(self, check: Check) -> None:
        self.check = check
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()  # loop time: plans and deadlines are kept in it
        self.clock_started = clock.now()  # durations are measured on the precise clock
        self.log = ProbeLog(self.clock_started)

    def say(self, message: str) -> None:
        self.log(clock.now(), message)

    def done(self, reason: str | None, report: ZoneReport | None = None) -> ProbeResult:
        result = finish(success=reason is None, reason=reason, started=self.clock_started, now=clock.now(),
                        phases={}, details={}, log=self.log)
        return dataclasses.replace(result, zone=report) if report is not None else result

    async def go(self, deadline: float) -> ProbeResult:
        settings = self.check.authoritative
        if settings is None:
            self.say("not an authoritative check: no zone settings")
            return self.done(r.INTERNAL)
        plans = discovery.plans()
        plan = plans.plan(self.check, self.started)
        refresh = None
        if plan.due(self.started):
            if not plan.targets:  # nothing to ask yet: discover first
                half = self.started + (deadline - self.started) / 2
                await plans.refresh(self.check, plan, deadline=half, probe_log=self.log)
            else:
                refresh = plans.refresh(self.check, plan, deadline=deadline, probe_log=self.log)
        targets = plan.targets
        jobs = [self._ask_all(settings, targets, deadline)]
        if refresh is not None:
            jobs.append(refresh)
        results, *_ = await asyncio.gather(*jobs)
        report = ZoneReport(zone=settings.zone, nameservers=tuple(results), discovery_success=plan.success,
                            last_discovery=plan.last_discovery, set_changes=plan.changes)
        return self.done(self._verdict(report, plan), report)

    async def _ask_all(self, settings: AuthoritativeCheck, targets: Sequence[Target],
                       deadline: float) -> list[NameserverResult]:
        if targets:
            self.say(f"asking {len(targets)} nameserver address(es) of {settings.zone} over "
                     f"{'/'.join(settings.transports)}")
        return list(await asyncio.gather(*(
            self._ask(settings, target, transport, deadline)
            for target in targets for transport in settings.transports)))

    async def _ask(self, settings: AuthoritativeCheck, target: Target, transport: str,
                   deadline: float) -> NameserverResult:
        """The SOA (then each query name) from one address over one transport."""
        zone = dns.name.from_text(settings.zone)
        response, reason, duration = await self._query(target, transport, zone, dns.rdatatype.SOA, deadline)
        where = f"{target.nameserver} {target.label} {transport}"
        if response is None:
            self.say(f"{where}: {reason} after {duration * 1000:.1f}ms")
            return NameserverResult(target.nameserver, target.label, transport, False, reason, duration)
        rcode, aa = response.rcode(), bool(response.flags & dns.flags.AA)
        serial = _serial(response, zone)
        reason = _answer_problem(rcode, aa, found=serial is not None)
        self.say(f"{where}: {dns.rcode.to_text(rcode)}{' aa' if aa else ''}"
                 f"{f' serial {serial}' if serial is not None else ''} in {duration * 1000:.1f}ms"
                 f"{f' -> {reason}' if reason else ''}")
        for name in settings.query_names if reason is None else ():
            reason = await self._check_name(target, transport, name, deadline, where)
            if reason is not None:
                break
        return NameserverResult(target.nameserver, target.label, transport, reason is None, reason, duration,
                                rcode, aa, serial)

    async def _check_name(self, target: Target, transport: str, name: str, deadline: float,
                          where: str) -> str | None:
        qname = dns.name.from_text(name)
        response, reason, _ = await self._query(target, transport, qname, dns.rdatatype.A, deadline)
        if response is None:
            self.say(f"{where}: {name} A: {reason}")
            return reason
        found = any(rrset.name == qname and rrset.rdclass == dns.rdataclass.IN for rrset in response.answer)
        reason = _answer_problem(response.rcode(), bool(response.flags & dns.flags.AA), found=found)
        if reason is not None:
            self.say(f"{where}: {name} A: {dns.rcode.to_text(response.rcode())} -> {reason}")
        return reason

    async def _query(self, target: Target, transport: str, name: dns.name.Name, rdtype: int,
                     deadline: float) -> tuple[dns.message.Message | None, str | None, float]:
        """The answer or the reason there is none, and how long the exchange took (connect + request:
        without the time an answer waited for the event loop)."""
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        query.flags &= ~dns.flags.RD
        ex = await exchange(query, target.server, transport=transport, deadline=deadline, log=self.log)
        duration = sum(ex.phases.values())
        if ex.response is None:
            return None, ex.reason or r.DNS_TIMEOUT, duration
        return ex.response, None, duration

    def _verdict(self, report: ZoneReport, plan: Plan) -> str | None:
        """None when a majority of the addresses answers, else the commonest reason of the others."""
        total, answering = report.addresses, report.answering
        if total == 0:
            reason = plan.found.reason if plan.found is not None and plan.found.reason else r.DNS_NO_ANSWER
            self.say(f"no nameserver address of {report.zone} to ask: {reason}")
            return reason
        agree = report.serials_agree
        serials = "" if agree is None else ("; serials agree" if agree else "; serials differ")
        self.say(f"{answering} of {total} nameserver addresses of {report.zone} answering{serials}")
        if answering * 2 > total:
            return None
        return _commonest(_address_reasons(report))


def _answer_problem(rcode: int, aa: bool, *, found: bool) -> str | None:
    reason = rcode_reason(rcode)
    if reason is not None:
        return reason
    if not aa:
        return r.DNS_NOT_AUTHORITATIVE
    return None if found else r.DNS_NO_ANSWER


def _serial(response: dns.message.Message, zone: dns.name.Name) -> int | None:
    for rrset in response.answer:
        if (rrset.rdtype == dns.rdatatype.SOA and rrset.name == zone and rrset.rdclass == dns.rdataclass.IN
                and len(rrset)):
            return int(rrset[0].serial)
    return None


def _address_reasons(report: ZoneReport) -> list[str]:
    """One reason per address that no transport reached: the first transport's."""
    up = {(n.nameserver, n.address) for n in report.nameservers if n.up}
    out: dict[tuple[str, str], str] = {}
    for n in report.nameservers:
        key = (n.nameserver, n.address)
        if key not in up and key not in out:
            out[key] = n.reason or r.DNS_TIMEOUT
    return list(out.values())


def _commonest(reasons: Sequence[str]) -> str:
    counts = Counter(reasons)
    return min(counts, key=lambda reason: (-counts[reason], _REASON_ORDER.get(reason, len(_REASON_ORDER))))

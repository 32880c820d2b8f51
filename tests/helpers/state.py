"""Builders for the exporter.state tests: runs recorded into a real ResultStore at chosen times, judged
at a chosen ``now``, and the shapes several of them share (a service's checks, the 2021 outage)."""

from __future__ import annotations

from exporter import state as st
from exporter.checks import Check
from exporter.config.model import AuthoritativeCheck
from exporter.probers import result as r
from exporter.probers.result import NameserverResult, ProbeResult, ZoneReport
from exporter.results import ResultStore
from tests.helpers.factories import make_check, make_result

NOW = 1_700_000_000.0
REGIONS = [("eu-west", "Europe West"), ("us-east", "US East")]
HTTP_503 = make_result(False, reason=r.HTTP_STATUS, details={r.D_HTTP_STATUS: 503})
HTTP_200 = make_result(True, details={r.D_HTTP_STATUS: 200})


def store_source(store: ResultStore, regions=REGIONS, signals: st.CauseSignals | None = None) -> st.Source:
    """A Board source reading every check of ``store`` in its own region."""
    def source():
        inputs = [st.Input(check, check.region, tuple(state.window or ())) for check, state in store.items()]
        return inputs, list(regions), {}, signals or st.CauseSignals()
    return source


def snapshot_of(store: ResultStore, now: float = NOW, regions=REGIONS,
                signals: st.CauseSignals | None = None) -> st.Snapshot:
    inputs, regions_, verdicts, beside = store_source(store, regions, signals)()
    return st.evaluate(inputs, regions_, now, verdicts=verdicts, beside=beside)


def record(store: ResultStore, check: Check, outcomes: list[bool | ProbeResult], *, end: float = NOW,
           every: float = 10.0, **kw) -> None:
    """Record ``outcomes`` (True / False / a result) ending at ``end``, one every ``every`` seconds."""
    for i, outcome in enumerate(outcomes):
        t = end - (len(outcomes) - 1 - i) * every
        if isinstance(outcome, bool):
            result = make_result(outcome, finished_at=t, **({} if outcome else kw))
        else:
            result = make_result(outcome.success, reason=outcome.reason, details=dict(outcome.details),
                                 zone=outcome.zone, finished_at=t)
        store.record(check, result)


def zone_report(answering: int, total: int = 2) -> ZoneReport:
    return ZoneReport(zone="example.test", nameservers=tuple(
        NameserverResult(f"ns{i}.example.test", f"127.0.0.{i + 1}", "udp", up=i < answering,
                         reason=None if i < answering else r.DNS_TIMEOUT) for i in range(total)))


def service_checks(name: str, provider: str, region: str, *, authoritative: bool = False) -> list[Check]:
    """A service's two DNS checks (one per resolver), its HTTPS check and optionally its zone check."""
    checks = [make_check("dns", service=name, provider=provider, region=region, prober="dns",
                         resolver="127.0.0.1:5301"),
              make_check("dns", service=name, provider=provider, region=region, prober="dns",
                         resolver="127.0.0.1:5302"),
              make_check("https", service=name, provider=provider, region=region)]
    if authoritative:
        checks.append(make_check("authns", service=name, provider=provider, region=region,
                                 authoritative=AuthoritativeCheck(zone=f"{name}.test")))
    return checks


def the_2021_shape() -> ResultStore:
    """facebook and whatsapp of meta from both regions: nameservers silent, resolvers SERVFAIL/timeout,
    edges 503."""
    store = ResultStore()
    checks = [c for name in ("facebook", "whatsapp") for region, _ in REGIONS
              for c in service_checks(name, "meta", region, authoritative=True)]
    store.set_checks(checks)
    for check in checks:
        if check.authoritative is not None:
            record(store, check, [make_result(False, reason=r.DNS_TIMEOUT, zone=zone_report(0))] * 4)
        elif check.prober == "dns":
            reason = r.DNS_SERVFAIL if check.resolver.endswith("01") else r.DNS_TIMEOUT
            record(store, check, [False] * 4, reason=reason)
        else:
            record(store, check, [HTTP_503] * 4)
    return store


def routing_verdict(provider: str, state: str, *, peers: int = 0, seen: int = 5,
                    roles: tuple[str, ...] = ("nameservers", "nameservers")) -> st.RoutingVerdict:
    prefixes = tuple(st.PrefixVerdict(f"127.10.{i}.0/24", role, state, peers if state == "lost" else seen, seen)
                     for i, role in enumerate(roles))
    return st.RoutingVerdict(provider, prefixes)


def declared_status(provider: str, reachable: bool | None, indicator: str | None = None) -> st.DeclaredStatus:
    return st.DeclaredStatus(provider, reachable, indicator)

"""exporter.state.incident: one incident per provider with a cell down, its causes ranked routing >
authoritative DNS > resolution > connect > TLS > HTTP and worded; the status page appended beside them."""

from __future__ import annotations

from dataclasses import replace

from exporter import state as st
from exporter.state.incident import incidents
from tests.helpers.state import NOW, declared_status, routing_verdict, snapshot_of, the_2021_shape


def test_an_incident_keeps_its_since_and_only_down_cells_open_one() -> None:
    snap = snapshot_of(the_2021_shape())
    [incident] = incidents(snap.cells, snap.providers, {"meta": NOW - 300}, NOW)
    assert incident.since == NOW - 300 and incident.services == ("facebook", "whatsapp")
    assert incident.summary(NOW).endswith("(5 min)")
    degraded = [replace(c, state=st.DEGRADED) for c in snap.cells]
    controls = [replace(c, control=True) for c in snap.cells]
    assert incidents(degraded, snap.providers, {}, NOW) == incidents(controls, snap.providers, {}, NOW) == ()


def test_incident_ranks_authoritative_dns_before_resolution_and_http() -> None:
    """The 2021 shape: nameservers silent, resolvers SERVFAIL/timeout, edges 503."""
    snap = snapshot_of(the_2021_shape())
    assert {p.provider: (p.state, p.outage) for p in snap.providers} == {"meta": (st.DOWN, True)}
    [incident] = snap.incidents
    assert incident.causes == ("authoritative", "resolution", "http")
    assert incident.summary(NOW + 60).startswith(
        "meta: DNS, authoritative nameservers unreachable (0 of 2 answering), resolvers SERVFAIL/timeout, "
        "HTTP 503, 2 services, 2 regions, since ")
    assert set(snap.cell("facebook", "eu-west").signals) == {"any", "dns", "http_5xx", "nameservers"}  # type: ignore[union-attr]


def test_a_routing_loss_is_the_incidents_first_cause() -> None:
    signals = st.CauseSignals(routing=(routing_verdict("meta", "lost"),))
    [incident] = snapshot_of(the_2021_shape(), signals=signals).incidents
    assert incident.cause == "routing"
    assert incident.causes == ("routing", "authoritative", "resolution", "http")
    assert incident.summary(NOW + 60).startswith(
        "meta: BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers), "
        "DNS, authoritative nameservers unreachable (0 of 2 answering), resolvers SERVFAIL/timeout, HTTP 503, "
        "2 services, 2 regions, since ")


def test_declared_status_is_appended_against_what_is_measured() -> None:
    store = the_2021_shape()

    def summary(declared: st.DeclaredStatus) -> str:
        [incident] = snapshot_of(store, signals=st.CauseSignals(declared=(declared,))).incidents
        assert incident.cause == "authoritative"  # declared status changes no cause
        return incident.summary(NOW + 60)

    assert summary(declared_status("meta", False)).endswith("(1 min); status page unreachable")
    assert summary(declared_status("meta", True, "none")).endswith(
        "(1 min); status page says All Systems Operational while 2 services are down")
    assert summary(declared_status("meta", True, "major")).endswith("(1 min); status page: Partial System Outage")
    assert summary(declared_status("meta", None)).endswith("(1 min)")  # not polled yet: nothing to say
    assert summary(declared_status("other", False)).endswith("(1 min)")  # another provider's page


def test_an_inconclusive_feed_names_no_bgp_cause() -> None:
    verdict = st.RoutingVerdict("meta", (st.PrefixVerdict("127.10.0.0/24", "nameservers", "inconclusive", 0, 5),
                                         st.PrefixVerdict("127.10.1.0/24", "nameservers", "lost", 0, 5)))
    assert verdict.state == "inconclusive"  # the feed cannot be trusted: not even a lost prefix counts
    snap = snapshot_of(the_2021_shape(), signals=st.CauseSignals(routing=(verdict,)))
    [incident] = snap.incidents
    assert incident.cause == "authoritative" and "BGP" not in incident.summary(NOW)
    assert st.signal_lines(snap.routing, ()) == (
        "meta: BGP inconclusive: the routing feed is down or stalled (2 prefixes watched)",)

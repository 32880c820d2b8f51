import asyncio
import re
import socket
import ssl
import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.checks import Check
from exporter.config.model import DNSProbe, Module, Resolver, RRValidator, TLSConfig
from exporter.probers import dnsanswer
from exporter.probers import result as r
from exporter.probers.dns import probe
from tests.servers.dns import start_dns, start_dot

ZONE = {
    "www.test.": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
    "multi.test.": {"A": ["127.0.0.1", "127.0.0.2"], "TXT": ['"v=spf1 -all"']},
    "nodata.test.": {"TXT": ['"hello"']},
    "big.test.": {"TXT": [f'"{i:02d}{"x" * 200}"' for i in range(20)]},
    "slow.test.": {"A": ["127.0.0.9"]},
    "upcase.test.": {"A": ["127.0.0.1"]},
    "zone.test.": {"NS": ["ns1.zone.test.", "ns2.zone.test."]},
    "ns1.zone.test.": {"A": ["127.0.0.53"]},
    "ns2.zone.test.": {"A": ["127.0.0.54"], "AAAA": ["::53"]},
    "test.": {"SOA": ["ns1.test. admin.test. 2021100401 3600 600 86400 60"]},
}
MODES = {
    "servfail.test.": "servfail",
    "refused.test.": "refused",
    "nx.test.": "nxdomain",
    "notimp.test.": "rcode:NOTIMP",
    "drop.test.": "drop",
    "slow.test.": "delay:0.3",
    "big.test.": "truncate",
    "noaa.test.": "noaa",
    "garbage.test.": "malformed",
    "mismatch.test.": "mismatch",
    "upcase.test.": "upcase",
}
TTLS = {"multi.test.": {"A": 600, "TXT": 45}}


@pytest.fixture
async def zone():
    server = await start_dns(ZONE, MODES, ttls=TTLS)
    yield server
    await server.stop()


def server_of(srv, *, tls: bool = False) -> Resolver:
    return Resolver(name=("tls://" if tls else "") + srv.address, host=srv.host, port=srv.port, tls=tls)


def dns_check(server: Resolver, qname: str, *, resolvers: tuple[Resolver, ...] = (), **settings) -> Check:
    settings.setdefault("query_type", "A")
    module = Module(name="dns_test", prober="dns", dns=DNSProbe(**settings))
    return Check(service="svc", provider="svc", region="eu", check="dns", target=qname, resolver=server.name,
                 module=module, resolvers=resolvers, dns_server=server, query_name=qname)


async def run(check: Check, timeout: float = 1.0):
    loop = asyncio.get_running_loop()
    return await probe(check, deadline=loop.time() + timeout)


def validator(**rules: str) -> RRValidator:
    return RRValidator(**{name: (re.compile(pattern),) for name, pattern in rules.items()})


def in_log(result, text: str) -> bool:
    return any(text in line for line in result.log)


# --- Answers and their details ------------------------------------------------------------------------


async def test_a_record_success_reports_details_and_tells_the_story(zone):
    res = await run(dns_check(server_of(zone), "www.test"))
    assert res.success and res.reason is None
    d = res.details
    assert d[r.D_DNS_RCODE] == 0 and d[r.D_DNS_ANSWER_RRS] == 1 and d[r.D_DNS_AUTHORITY_RRS] == 0
    assert d[r.D_DNS_ADDITIONAL_RRS] == 0 and d[r.D_DNS_MIN_TTL] == 300 and d[r.D_DNS_AA] == 1
    assert d[r.D_DNS_TRANSPORT] == "udp" and d[r.D_DNS_TRUNCATED] == 0
    assert d[r.D_IP_PROTOCOL] == 4 and d[r.D_ADDRESS] == "127.0.0.1"
    assert r.D_DNS_NEGATIVE_TTL not in d and r.D_DNS_SERIAL not in d
    assert set(res.phases) == {r.PHASE_REQUEST}
    assert in_log(res, f"querying {zone.address} over udp for www.test A (rd=1)")
    assert in_log(res, "answer: NOERROR, 1 answer/0 authority/0 additional RRs")


@pytest.mark.parametrize(("name", "reason", "rcode"), [
    ("nx.test", r.DNS_NXDOMAIN, dns.rcode.NXDOMAIN),
    ("servfail.test", r.DNS_SERVFAIL, dns.rcode.SERVFAIL),
    ("refused.test", r.DNS_REFUSED, dns.rcode.REFUSED),
    ("notimp.test", r.DNS_RCODE, dns.rcode.NOTIMP),
])
async def test_rcode_not_valid_fails_with_its_reason(zone, name, reason, rcode):
    res = await run(dns_check(server_of(zone), name))
    assert not res.success and res.reason == reason
    assert res.details[r.D_DNS_RCODE] == rcode


async def test_servfail_log_lines(zone):
    res = await run(dns_check(server_of(zone), "servfail.test"))
    assert in_log(res, "answer: SERVFAIL, 0 answer/0 authority/0 additional RRs")
    assert in_log(res, "rcode SERVFAIL not in valid_rcodes NOERROR")


async def test_valid_rcodes_decide(zone):
    res = await run(dns_check(server_of(zone), "nx.test", valid_rcodes=("NOERROR", "NXDOMAIN")))
    assert res.success and res.details[r.D_DNS_RCODE] == dns.rcode.NXDOMAIN
    res = await run(dns_check(server_of(zone), "www.test", valid_rcodes=("NXDOMAIN",)))
    assert not res.success and res.reason == r.DNS_RCODE


@pytest.mark.parametrize(("name", "reason"), [
    ("garbage.test", r.DNS_MALFORMED),
    ("mismatch.test", r.DNS_MALFORMED),
])
async def test_unusable_answers_are_malformed(zone, name, reason):
    res = await run(dns_check(server_of(zone), name))
    assert not res.success and res.reason == reason
    assert r.D_DNS_RCODE not in res.details


async def test_question_echoed_in_another_case_is_still_our_answer(zone):
    res = await run(dns_check(server_of(zone), "upcase.test"))
    assert res.success and res.details[r.D_DNS_ANSWER_RRS] == 1


async def test_nodata_succeeds_like_blackbox_but_reports_zero_answers(zone):
    res = await run(dns_check(server_of(zone), "nodata.test"))
    assert res.success
    assert res.details[r.D_DNS_ANSWER_RRS] == 0 and res.details[r.D_DNS_AUTHORITY_RRS] == 1
    assert res.details[r.D_DNS_NEGATIVE_TTL] == 60  # min(SOA TTL 300, SOA minimum 60)
    assert r.D_DNS_MIN_TTL not in res.details
    assert in_log(res, "NODATA")


async def test_negative_ttl_on_nxdomain_is_the_lesser_of_soa_ttl_and_minimum():
    server = await start_dns(ZONE, MODES, ttl=30)
    try:
        res = await run(dns_check(server_of(server), "absent.test", valid_rcodes=("NXDOMAIN",)))
    finally:
        await server.stop()
    assert res.success and res.details[r.D_DNS_NEGATIVE_TTL] == 30
    assert res.details[r.D_DNS_SERIAL] == 2021100401


async def test_min_ttl_over_the_answer_section(zone):
    res = await run(dns_check(server_of(zone), "multi.test", query_type="ANY"))
    assert res.success
    assert res.details[r.D_DNS_ANSWER_RRS] == 3 and res.details[r.D_DNS_MIN_TTL] == 45


async def test_soa_serial(zone):
    res = await run(dns_check(server_of(zone), "test", query_type="SOA"))
    assert res.success and res.details[r.D_DNS_SERIAL] == 2021100401


async def test_authoritative_flag(zone):
    yes = await run(dns_check(server_of(zone), "www.test"))
    no = await run(dns_check(server_of(zone), "noaa.test", valid_rcodes=("NXDOMAIN",)))
    assert yes.details[r.D_DNS_AA] == 1 and no.details[r.D_DNS_AA] == 0


# --- What goes on the wire --------------------------------------------------------------------------------


def test_cached_query_renders_exactly_like_dnspython():
    from exporter.probers.dns import _template

    template = _template("www.test", "AAAA", "CH", False)
    first, second = template.fresh(), template.fresh()
    for query in (first, second):
        assert query.to_wire() == dns.message.QueryMessage.to_wire(query)
    assert template.id == 0 and first.question is template.question


@pytest.mark.parametrize("rd", [True, False])
async def test_rd_flag_and_class_are_sent_without_edns(zone, rd):
    await run(dns_check(server_of(zone), "www.test", recursion_desired=rd, query_type="TXT", query_class="CH"))
    query, transport = zone.handler.received[-1]
    assert bool(query.flags & dns.flags.RD) is rd
    assert query.edns == -1  # no OPT record, as blackbox_exporter
    q = query.question[0]
    assert (q.name.to_text(), q.rdtype, q.rdclass) == ("www.test.", dns.rdatatype.TXT, dns.rdataclass.CH)
    assert transport == "udp"


async def test_rd_shown_in_log(zone):
    res = await run(dns_check(server_of(zone), "www.test", recursion_desired=False))
    assert in_log(res, "for www.test A (rd=0)")


async def test_tcp_transport(zone):
    res = await run(dns_check(server_of(zone), "www.test", transport_protocol="tcp"))
    assert res.success and res.details[r.D_DNS_TRANSPORT] == "tcp"
    assert set(res.phases) == {r.PHASE_CONNECT, r.PHASE_REQUEST}
    assert zone.handler.received[-1][1] == "tcp"


async def test_truncated_udp_answer_is_retried_over_tcp(zone):
    res = await run(dns_check(server_of(zone), "big.test", query_type="TXT"))
    assert res.success and res.details[r.D_DNS_TRUNCATED] == 1 and res.details[r.D_DNS_TRANSPORT] == "tcp"
    assert res.details[r.D_DNS_ANSWER_RRS] == 20
    assert [t for _, t in zone.handler.received[-2:]] == ["udp", "tcp"]
    assert in_log(res, "retrying over TCP")


async def test_parallel_probes_get_their_own_ids_and_answers(zone):
    check = dns_check(server_of(zone), "slow.test")
    results = await asyncio.gather(*(run(check) for _ in range(8)))
    assert all(res.success for res in results)
    ids = [query.id for query, _ in zone.handler.received]
    assert len(ids) == 8 and len(set(ids)) == 8


# --- Time ---------------------------------------------------------------------------------------------


async def test_delay_is_measured_in_the_request_phase(zone):
    res = await run(dns_check(server_of(zone), "slow.test"))
    assert res.success
    assert 0.28 <= res.phases[r.PHASE_REQUEST] < 0.5
    assert res.duration_seconds >= res.phases[r.PHASE_REQUEST]


async def test_drop_times_out_by_the_deadline(zone):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    res = await run(dns_check(server_of(zone), "drop.test"), timeout=0.3)
    assert loop.time() - t0 < 0.3 + 0.05
    assert not res.success and res.reason == r.DNS_TIMEOUT
    assert r.D_DNS_RCODE not in res.details and r.PHASE_REQUEST in res.phases


async def test_drop_over_tcp_times_out_too(zone):
    res = await run(dns_check(server_of(zone), "drop.test", transport_protocol="tcp"), timeout=0.3)
    assert res.reason == r.DNS_TIMEOUT


async def test_cancellation_propagates(zone):
    task = asyncio.ensure_future(run(dns_check(server_of(zone), "drop.test"), timeout=5))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_nothing_listening_is_dns_unreachable(transport):
    port = free_port()
    server = Resolver(name=f"127.0.0.1:{port}", host="127.0.0.1", port=port)
    res = await run(dns_check(server, "www.test", transport_protocol=transport))
    assert res.reason == r.DNS_UNREACHABLE


# --- validate_*_rrs (blackbox semantics) -------------------------------------------------------------


@pytest.mark.parametrize(("qname", "qtype", "section", "rules", "ok"), [
    # answer of multi.test A: two RRs, 127.0.0.1 and 127.0.0.2
    ("multi.test", "A", "answer", {"fail_if_matches_regexp": r"127\.0\.0\.2"}, False),
    ("multi.test", "A", "answer", {"fail_if_matches_regexp": r"10\.0\.0\.1"}, True),
    ("multi.test", "A", "answer", {"fail_if_not_matches_regexp": r"^multi\.test\.\t600\tIN\tA\t127\.0\.0\.1$"},
     False),
    ("multi.test", "A", "answer", {"fail_if_not_matches_regexp": r"^multi\.test\.\t600\tIN\tA\t127\.0\.0\."},
     True),
    ("multi.test", "A", "answer", {"fail_if_all_match_regexp": r"127\.0\.0\.1"}, False),
    ("multi.test", "A", "answer", {"fail_if_all_match_regexp": r"127\.0\.0\."}, True),
    ("multi.test", "A", "answer", {"fail_if_none_matches_regexp": r"10\.0\.0\."}, False),
    ("multi.test", "A", "answer", {"fail_if_none_matches_regexp": r"127\.0\.0\.2"}, True),
    # the authority section of that answer is empty
    ("multi.test", "A", "authority", {"fail_if_matches_regexp": "x"}, True),
    ("multi.test", "A", "authority", {"fail_if_not_matches_regexp": "x"}, False),
    ("multi.test", "A", "authority", {"fail_if_all_match_regexp": "x"}, True),
    ("multi.test", "A", "authority", {"fail_if_none_matches_regexp": "x"}, False),
    # additional of zone.test NS: glue ns1 A 127.0.0.53, ns2 A 127.0.0.54, ns2 AAAA ::53
    ("zone.test", "NS", "additional", {"fail_if_all_match_regexp": r"127\.0\.0\."}, False),
    ("zone.test", "NS", "additional", {"fail_if_none_matches_regexp": r"127\.0\.0\.99"}, False),
    ("zone.test", "NS", "additional", {"fail_if_not_matches_regexp": r"^ns[12]\.zone\.test\."}, True),
    ("zone.test", "NS", "additional", {"fail_if_matches_regexp": r"AAAA\t::53$"}, False),
    ("zone.test", "NS", "answer", {"fail_if_not_matches_regexp": r"\tNS\tns[12]\.zone\.test\.$"}, True),
    # nodata.test A: NOERROR, empty answer, SOA in authority
    ("nodata.test", "A", "answer", {"fail_if_none_matches_regexp": "."}, False),
    ("nodata.test", "A", "authority", {"fail_if_not_matches_regexp": r"\tSOA\tns1\.test\. admin\.test\. "},
     True),
])
async def test_validators(zone, qname, qtype, section, rules, ok):
    check = dns_check(server_of(zone), qname, query_type=qtype,
                      **{f"validate_{section}_rrs": validator(**rules)})
    res = await run(check)
    assert res.success is ok
    if not ok:
        assert res.reason == r.DNS_ANSWER_MISMATCH
        assert in_log(res, f"{section} section rejected")


async def test_validators_run_after_the_rcode_check(zone):
    check = dns_check(server_of(zone), "nx.test", valid_rcodes=("NXDOMAIN",),
                      validate_authority_rrs=validator(fail_if_matches_regexp=r"\tSOA\t"))
    res = await run(check)
    assert res.reason == r.DNS_ANSWER_MISMATCH


def test_check_rrs_empty_sections_follow_blackbox():
    assert dnsanswer.check_rrs([], validator(fail_if_matches_regexp="a")) is None
    assert dnsanswer.check_rrs([], validator(fail_if_all_match_regexp="a")) is None
    assert dnsanswer.check_rrs([], validator(fail_if_not_matches_regexp="a")) is not None
    assert dnsanswer.check_rrs([], validator(fail_if_none_matches_regexp="a")) is not None


# --- The two answer readers agree ------------------------------------------------------------------------


def _question_wire(query: dns.message.Message) -> bytes:
    q = query.question[0]
    return q.name.to_wire() + struct.pack("!HH", q.rdtype, q.rdclass)


@settings(max_examples=150, deadline=None)
@given(
    rcode=st.sampled_from([0, 1, 2, 3, 4, 5, 16]),
    aa=st.booleans(),
    ttls=st.lists(st.integers(0, 2**32 - 1), max_size=4),
    soa=st.one_of(st.none(), st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**32 - 1),
                                        st.integers(0, 2**32 - 1))),
    soa_in_answer=st.booleans(),
    glue=st.integers(0, 3),
    edns=st.booleans(),
    off_name=st.integers(0, 2),
)
def test_wire_reader_agrees_with_the_full_parser(rcode, aa, ttls, soa, soa_in_answer, glue, edns, off_name):
    query = dns.message.make_query("www.example.", "A", use_edns=0 if edns else None)
    resp = dns.message.make_response(query)
    resp.set_rcode(rcode)
    if aa:
        resp.flags |= dns.flags.AA
    for i, ttl in enumerate(ttls):
        resp.answer.append(dns.rrset.from_text("www.example.", ttl, "IN", "A", f"192.0.2.{i}"))
    for i in range(off_name):
        resp.answer.append(dns.rrset.from_text(f"a{i}.www.example.", 60, "IN", "A", f"192.0.2.{i}"))
    if soa is not None:
        ttl, serial, minimum = soa
        rrset = dns.rrset.from_text("example.", ttl, "IN", "SOA",
                                    f"ns.example. admin.example. {serial} 3600 600 86400 {minimum}")
        (resp.answer if soa_in_answer else resp.authority).append(rrset)
    for i in range(glue):
        resp.additional.append(dns.rrset.from_text(f"ns{i}.example.", 60, "IN", "AAAA", f"2001:db8::{i}"))
    wire = resp.to_wire()
    from_wire = dnsanswer.facts_from_wire(wire, _question_wire(query))
    assert from_wire is not None
    assert from_wire == dnsanswer.facts_from_message(dns.message.from_wire(wire), dnsanswer.question_of(query))


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=80))
def test_wire_reader_never_raises_on_garbage(garbage):
    query = dns.message.make_query("www.example.", "A")
    result = dnsanswer.facts_from_wire(query.to_wire()[:2] + b"\x80\x00" + garbage, _question_wire(query))
    assert result is None or r.D_DNS_RCODE in result


# --- DNS-over-TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def dot(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "dns.test").configure_cert(ctx)
    server = await start_dot(ZONE, ctx, MODES)
    yield server
    await server.stop()


def ca_file(ca: trustme.CA, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_dns_over_tls(dot, ca, tmp_path):
    check = dns_check(server_of(dot, tls=True), "www.test", tls_config=TLSConfig(ca_file=ca_file(ca, tmp_path)))
    res = await run(check)
    assert res.success, res.log
    assert res.details[r.D_DNS_TRANSPORT] == "tls" and res.details[r.D_TLS] == 1
    assert res.details[r.D_CERT_EXPIRY] > 0 and res.details[r.D_TLS_VERSION].startswith("TLS 1.")
    assert set(res.phases) == {r.PHASE_CONNECT, r.PHASE_REQUEST}
    assert in_log(res, "over tls for www.test A")


async def test_dns_over_tls_with_a_certificate_from_another_ca(dot, tmp_path):
    check = dns_check(server_of(dot, tls=True), "www.test",
                      tls_config=TLSConfig(ca_file=ca_file(trustme.CA(), tmp_path)))
    res = await run(check)
    assert not res.success and res.reason == r.TLS_CERT_INVALID


async def test_dns_over_tls_server_name_and_insecure_skip_verify(dot, ca, tmp_path):
    good = await run(dns_check(server_of(dot, tls=True), "www.test",
                               tls_config=TLSConfig(ca_file=ca_file(ca, tmp_path), server_name="dns.test")))
    wrong_name = await run(dns_check(server_of(dot, tls=True), "www.test",
                                     tls_config=TLSConfig(ca_file=ca_file(ca, tmp_path), server_name="x.test")))
    skip = await run(dns_check(server_of(dot, tls=True), "www.test",
                               tls_config=TLSConfig(insecure_skip_verify=True)))
    assert good.success and skip.success
    assert wrong_name.reason == r.TLS_CERT_INVALID


async def test_blackbox_dns_over_tls_flag_upgrades_a_plain_target(dot, ca, tmp_path):
    check = dns_check(server_of(dot), "www.test", dns_over_tls=True, transport_protocol="tcp",
                      tls_config=TLSConfig(ca_file=ca_file(ca, tmp_path)))
    res = await run(check)
    assert res.success and res.details[r.D_DNS_TRANSPORT] == "tls"


# --- Targets given by name, IPv6, and what must never happen ------------------------------------------


async def test_server_given_by_name_is_resolved_first(zone):
    target = await start_dns(ZONE, MODES, host="127.0.0.53")
    named = Resolver(name=f"ns1.zone.test:{target.port}", host="ns1.zone.test", port=target.port)
    try:
        res = await run(dns_check(named, "www.test", resolvers=(server_of(zone),)))
    finally:
        await target.stop()
    assert res.success and res.details[r.D_ADDRESS] == "127.0.0.53"
    assert set(res.phases) == {r.PHASE_RESOLVE, r.PHASE_REQUEST}


async def test_server_name_that_does_not_resolve(zone):
    named = Resolver(name="nx.test:53", host="nx.test", port=53)
    res = await run(dns_check(named, "www.test", resolvers=(server_of(zone),)))
    assert res.reason == r.DNS_NXDOMAIN and r.PHASE_RESOLVE in res.phases


async def test_ipv6_server():
    try:
        server = await start_dns(ZONE, MODES, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        res = await run(dns_check(Resolver(name=f"[::1]:{server.port}", host="::1", port=server.port), "www.test"))
    finally:
        await server.stop()
    assert res.success and res.details[r.D_IP_PROTOCOL] == 6
    assert in_log(res, f"querying [::1]:{server.port} over udp")


async def test_incomplete_or_invalid_settings_are_internal_errors(zone):
    no_name = await run(dns_check(server_of(zone), ""))
    bad_type = await run(dns_check(server_of(zone), "www.test", query_type="NOPE"))
    bad_rcode = await run(dns_check(server_of(zone), "www.test", valid_rcodes=("NOPE",)))
    assert no_name.reason == bad_type.reason == bad_rcode.reason == r.INTERNAL
    assert in_log(bad_type, "invalid query settings")


async def test_a_bug_becomes_an_internal_result_not_an_exception(zone, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("exporter.probers.dns.exchange", broken)
    res = await run(dns_check(server_of(zone), "www.test"))
    assert res.reason == r.INTERNAL and in_log(res, "internal error: RuntimeError: boom")


def test_registry_maps_every_prober():
    from exporter.probers import PROBERS

    assert set(PROBERS) == {"http", "dns", "tcp", "authoritative"}
    assert PROBERS["dns"] is probe


async def test_dns_over_tls_with_an_unreadable_ca_file(dot, tmp_path):
    check = dns_check(server_of(dot, tls=True), "www.test", tls_config=TLSConfig(ca_file=str(tmp_path / "no.pem")))
    res = await run(check)
    assert res.reason == r.TLS_HANDSHAKE and res.details[r.D_DNS_TRANSPORT] == "tls"
    assert in_log(res, "cannot load tls_config")
    assert dot.handler.received == []

"""Reading a DNS answer for the DNS prober: the facts it reports, and blackbox's ``validate_*_rrs`` rules.

Facts (detail keys from result.py) come from one of two readers that must agree:

* :func:`facts_from_wire` walks the raw answer without building objects. It serves the common case (a
  plain UDP answer and no validators) several times cheaper than a full parse, and gives up (None) on
  anything unusual: the caller then parses with dnspython, which also classifies garbage precisely.
* :func:`facts_from_message` reads a parsed :class:`dns.message.Message` (TCP, TLS, validators, or when
  the wire reader gave up).

The validators see each RR in blackbox's text form (``name<TAB>ttl<TAB>class<TAB>type<TAB>rdata``), so
existing regexps keep working, and follow blackbox's rules exactly, quirks included:

===============================  ============================================  ==============
rule                             fails when                                    empty section
===============================  ============================================  ==============
``fail_if_matches_regexp``       some RR matches some regexp                   passes
``fail_if_not_matches_regexp``   some RR misses some regexp                    fails
``fail_if_all_match_regexp``     some RR misses some regexp (what blackbox     passes
                                 does, despite the name)
``fail_if_none_matches_regexp``  no RR matches any regexp                      fails
===============================  ============================================  ==============
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from exporter.config.model import RRValidator
from exporter.probers import result as r

Facts = dict[str, float | int | str]

_HEADER = struct.Struct("!HHHHHH")
_RR_HEADER = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_SOA_TAIL = struct.Struct("!IIIII")  # serial, refresh, retry, expire, minimum
_OPT, _TSIG, _SOA = int(dns.rdatatype.OPT), int(dns.rdatatype.TSIG), int(dns.rdatatype.SOA)
_FIXED_RDLEN = {int(dns.rdatatype.A): 4, int(dns.rdatatype.AAAA): 16}
_NO_QUESTION_OK = {dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED}
_OPCODE_MASK = 0x7800
_AA = int(dns.flags.AA)


def facts(rcode: int, aa: bool, counts: Sequence[int], min_ttl: int | None,
          answer_soa: tuple[int, int, int] | None, authority_soa: tuple[int, int, int] | None) -> Facts:
    """Detail keys from what both readers find. SOAs are (ttl, serial, minimum) of the first SOA RR."""
    out: Facts = {
        r.D_DNS_RCODE: rcode,
        r.D_DNS_ANSWER_RRS: counts[0],
        r.D_DNS_AUTHORITY_RRS: counts[1],
        r.D_DNS_ADDITIONAL_RRS: counts[2],
        r.D_DNS_AA: int(aa),
    }
    if min_ttl is not None:
        out[r.D_DNS_MIN_TTL] = min_ttl
    soa = answer_soa or authority_soa
    if soa is not None:
        out[r.D_DNS_SERIAL] = soa[1]
    negative = rcode == dns.rcode.NXDOMAIN or (rcode == dns.rcode.NOERROR and counts[0] == 0)
    if negative and authority_soa is not None:  # RFC 2308 section 5: the lesser of SOA TTL and MINIMUM
        out[r.D_DNS_NEGATIVE_TTL] = min(authority_soa[0], authority_soa[2])
    return out


def facts_from_message(msg: dns.message.Message) -> Facts:
    answer = msg.answer
    return facts(msg.rcode(), bool(msg.flags & dns.flags.AA),
                 (_count(answer), _count(msg.authority), _count(msg.additional)),
                 min((rrset.ttl for rrset in answer), default=None), _soa(answer), _soa(msg.authority))


def _count(section: Sequence[dns.rrset.RRset]) -> int:
    return sum(len(rrset) for rrset in section)


def _soa(section: Sequence[dns.rrset.RRset]) -> tuple[int, int, int] | None:
    for rrset in section:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            first = rrset[0]
            return rrset.ttl, first.serial, first.minimum
    return None


def facts_from_wire(wire: bytes, question: bytes) -> Facts | None:
    """Facts straight from a response to a query whose question section is ``question`` (wire form).

    None when the answer is not plain: a question that is not byte-identical to ours, an opcode other
    than QUERY, TSIG, a misplaced or repeated OPT, A/AAAA rdata of the wrong size, or any structural
    error (the full parser then decides between a mismatch and garbage). RRs are counted as they are on
    the wire, as blackbox counts them; dnspython merges exact duplicates, so for a server that repeats an
    RR the full parser reports fewer.
    """
    try:
        return _walk(wire, question)
    except (struct.error, IndexError, ValueError):
        return None


def _walk(wire: bytes, question: bytes) -> Facts | None:
    _, flags, qdcount, *counts = _HEADER.unpack_from(wire)
    if flags & _OPCODE_MASK:
        return None
    off = 12
    if qdcount == 1 and wire.startswith(question, 12):
        off += len(question)
    elif not (qdcount == 0 and flags & 0xF in _NO_QUESTION_OK):
        return None
    found = [0, 0, 0]
    min_ttl: int | None = None
    soas: list[tuple[int, int, int] | None] = [None, None]
    ext_rcode = -1
    for section, count in enumerate(counts):
        for _ in range(count):
            off = _skip_name(wire, off)
            rtype, _, ttl, rdlen = _RR_HEADER.unpack_from(wire, off)
            off += 10
            end = off + rdlen
            if end > len(wire) or rtype == _TSIG or _FIXED_RDLEN.get(rtype, rdlen) != rdlen:
                return None
            if rtype == _OPT:
                if section != 2 or ext_rcode >= 0:
                    return None
                ext_rcode = ttl >> 24
                off = end
                continue
            ttl = 0 if ttl > 0x7FFFFFFF else ttl  # RFC 2181 section 8, as dnspython reads it
            found[section] += 1
            if section == 0:
                min_ttl = ttl if min_ttl is None else min(min_ttl, ttl)
            if rtype == _SOA and section < 2 and soas[section] is None:
                soas[section] = _soa_fields(wire, off, end, ttl)
            off = end
    if off != len(wire):
        return None
    rcode = (flags & 0xF) | (max(ext_rcode, 0) << 4)
    return facts(rcode, bool(flags & _AA), found, min_ttl, soas[0], soas[1])


def _skip_name(wire: bytes, off: int) -> int:
    while True:
        length = wire[off]
        if length == 0:
            return off + 1
        if length >= 0xC0:  # a compression pointer ends the name
            if off + 1 >= len(wire):
                raise ValueError("truncated compression pointer")
            return off + 2
        if length > 63:
            raise ValueError("unsupported label type")
        off += length + 1


def _soa_fields(wire: bytes, off: int, end: int, ttl: int) -> tuple[int, int, int]:
    off = _skip_name(wire, _skip_name(wire, off))
    if off + _SOA_TAIL.size != end:
        raise ValueError("bad SOA rdata length")
    serial, _, _, _, minimum = _SOA_TAIL.unpack_from(wire, off)
    return ttl, serial, minimum


# --- validate_*_rrs -------------------------------------------------------------------------------------


def active(v: RRValidator) -> bool:
    """Whether a validator has any rule (an idle one costs nothing: no text form is built)."""
    return bool(v.fail_if_matches_regexp or v.fail_if_not_matches_regexp or v.fail_if_all_match_regexp
                or v.fail_if_none_matches_regexp)


def rr_texts(section: Sequence[dns.rrset.RRset]) -> list[str]:
    """Each RR as blackbox (miekg/dns) prints it: ``name<TAB>ttl<TAB>class<TAB>type<TAB>rdata``."""
    out: list[str] = []
    for rrset in section:
        head = (f"{rrset.name.to_text()}\t{rrset.ttl}\t{dns.rdataclass.to_text(rrset.rdclass)}\t"
                f"{dns.rdatatype.to_text(rrset.rdtype)}\t")
        out.extend(head + rdata.to_text() for rdata in rrset)
    return out


def check_rrs(rrs: Sequence[str], v: RRValidator) -> str | None:
    """The first problem the validator finds in one section (see the module docstring), or None."""
    if not rrs and v.fail_if_not_matches_regexp:
        return "fail_if_not_matches_regexp is set but the section is empty"
    if not rrs and v.fail_if_none_matches_regexp:
        return "fail_if_none_matches_regexp is set but the section is empty"
    for rr in rrs:
        for pattern in v.fail_if_matches_regexp:
            if pattern.search(rr):
                return f"{rr!r} matches {pattern.pattern!r} (fail_if_matches_regexp)"
        for pattern in v.fail_if_not_matches_regexp:
            if not pattern.search(rr):
                return f"{rr!r} does not match {pattern.pattern!r} (fail_if_not_matches_regexp)"
    for rr in rrs:
        for pattern in v.fail_if_all_match_regexp:
            if not pattern.search(rr):
                return f"{rr!r} does not match {pattern.pattern!r} (fail_if_all_match_regexp)"
    patterns = v.fail_if_none_matches_regexp
    if patterns and not any(p.search(rr) for rr in rrs for p in patterns):
        return f"no RR matches any of {[p.pattern for p in patterns]} (fail_if_none_matches_regexp)"
    return None

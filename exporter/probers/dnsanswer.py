"""Reading a DNS answer for every path: what it says, which records count, and blackbox's ``validate_*_rrs``.

One verdict per packet. :func:`parse` (dnspython's parser, plus "is this the answer to our query") decides
whether an answer is usable; a packet it rejects is ``dns_malformed`` for the DNS prober, for name
resolution (resolve.py), for authoritative checks and for discovery alike. :func:`facts_from_wire` is only
a faster way to read the common case: it walks the raw answer with the same rules (names decompressed
and checked like dnspython does, pointers strictly backwards, rdata of the few types it knows checked to
the byte) and gives up (None) on anything else, so it never accepts a packet :func:`parse` rejects.

Only records that answer the question count, as a resolver would use them: in the answer section, records
of the question's class owned by the name asked or by a name the CNAME chain from it reaches (at most
``MAX_CNAME_CHAIN`` links); in the other sections, records of the question's class. Everything else (an
``HS`` record in an ``IN`` answer, a record for another name) is ignored by the counts, the TTL and serial
facts, the validators and the addresses used to connect.

Facts (detail keys from result.py) come from either reader and must agree:

* :func:`facts_from_wire` serves a plain UDP answer without validators, many times cheaper than a full
  parse.
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
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from exporter.config.model import RRValidator
from exporter.probers import result as r

Facts = dict[str, float | int | str]
Question = tuple[bytes, int, int]  # (name in lower-case wire form, type, class): what an answer must answer

MAX_CNAME_CHAIN = 16  # CNAME links followed from the name asked; more is treated like a loop
MAX_POINTERS = 16  # compression pointers followed in one name (dnspython's limit)

_HEADER = struct.Struct("!HHHHHH")
_RR_HEADER = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_TYPE_CLASS = struct.Struct("!HH")
_SOA_TAIL = struct.Struct("!IIIII")  # serial, refresh, retry, expire, minimum
_OPT, _SOA, _CNAME = int(dns.rdatatype.OPT), int(dns.rdatatype.SOA), int(dns.rdatatype.CNAME)
_NO_CHAIN = frozenset({_CNAME, int(dns.rdatatype.ANY)})  # questions whose answer is not followed
_NAME_RDATA = frozenset({_CNAME, int(dns.rdatatype.NS), int(dns.rdatatype.PTR)})
_FIXED_RDLEN = {int(dns.rdatatype.A): 4, int(dns.rdatatype.AAAA): 16}
_IN, _ANY_CLASS = int(dns.rdataclass.IN), int(dns.rdataclass.ANY)
_NO_QUESTION_OK = {dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED}
_OPCODE_MASK = 0x7800
_AA = int(dns.flags.AA)


# --- The one parser -------------------------------------------------------------------------------------


def parse(wire: bytes, query: dns.message.Message) -> dns.message.Message:
    """``wire`` as the answer to ``query``; raises (a dnspython error: ``dns_malformed``) for garbage or an
    answer to another question. Every path that reads a DNS answer goes through here."""
    response = dns.message.from_wire(wire, keyring=query.keyring, request_mac=query.mac)
    if not query.is_response(response):
        raise dns.query.BadResponse("the answer does not match the question")
    return response


def question_of(query: dns.message.Message) -> Question:
    q = query.question[0]
    return q.name.to_digestable(), int(q.rdtype), int(q.rdclass)


def question_from_wire(question: bytes) -> Question:
    """The :data:`Question` of an uncompressed question section (name, type, class) in wire form."""
    qtype, qclass = _TYPE_CLASS.unpack_from(question, len(question) - 4)
    return question[:-4].lower(), qtype, qclass


# --- Which records answer the question ------------------------------------------------------------------


def chain(qname: bytes, qtype: int, cnames: dict[bytes, bytes]) -> tuple[set[bytes], bool]:
    """Owner names whose records answer the question: the name asked and the CNAME targets reached from
    it (``cnames``: owner -> target), and whether the chain loops or runs past ``MAX_CNAME_CHAIN``."""
    names = {qname}
    if qtype in _NO_CHAIN:
        return names, False
    name = qname
    for _ in range(MAX_CNAME_CHAIN):
        target = cnames.get(name)
        if target is None:
            return names, False
        if target in names:
            return names, True
        names.add(target)
        name = target
    return names, name in cnames


def _class_ok(rdclass: int, qclass: int) -> bool:
    return rdclass == qclass or qclass == _ANY_CLASS


@dataclass(frozen=True, slots=True)
class Relevant:
    """The records of a parsed answer that answer the question (see the module docstring)."""

    answer: list[dns.rrset.RRset]
    authority: list[dns.rrset.RRset]
    additional: list[dns.rrset.RRset]
    looped: bool  # the CNAME chain loops or is too long


def relevant(msg: dns.message.Message, question: Question) -> Relevant:
    qname, qtype, qclass = question
    cnames: dict[bytes, bytes] = {}
    for rrset in msg.answer:
        if rrset.rdtype == _CNAME and _class_ok(rrset.rdclass, qclass) and len(rrset):
            cnames.setdefault(rrset.name.to_digestable(), rrset[0].target.to_digestable())
    names, looped = chain(qname, qtype, cnames)
    answer = [rrset for rrset in msg.answer
              if _class_ok(rrset.rdclass, qclass) and rrset.name.to_digestable() in names]
    return Relevant(answer, [rs for rs in msg.authority if _class_ok(rs.rdclass, qclass)],
                    [rs for rs in msg.additional if _class_ok(rs.rdclass, qclass)], looped)


def addresses(msg: dns.message.Message, question: Question) -> tuple[list[str], bool]:
    """The addresses (A or AAAA, as asked) that answer the question, and whether the CNAME chain loops."""
    found = relevant(msg, question)
    qtype = question[1]
    return [rd.address for rrset in found.answer if rrset.rdtype == qtype for rd in rrset], found.looped


# --- Facts ----------------------------------------------------------------------------------------------


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


def facts_from_message(msg: dns.message.Message, question: Question) -> Facts:
    found = relevant(msg, question)
    answer = found.answer
    return facts(msg.rcode(), bool(msg.flags & dns.flags.AA),
                 (_count(answer), _count(found.authority), _count(found.additional)),
                 min((rrset.ttl for rrset in answer), default=None), _soa(answer), _soa(found.authority))


def _count(section: Sequence[dns.rrset.RRset]) -> int:
    return sum(len(rrset) for rrset in section)


def _soa(section: Sequence[dns.rrset.RRset]) -> tuple[int, int, int] | None:
    for rrset in section:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            first = rrset[0]
            return rrset.ttl, first.serial, first.minimum
    return None


# --- The wire reader ------------------------------------------------------------------------------------

_RR = tuple[int, bytes, int, int, int, object]  # section, owner, type, class, ttl, CNAME target or SOA fields


def facts_from_wire(wire: bytes, question: bytes) -> Facts | None:
    """Facts straight from a response to a query whose question section is ``question`` (wire form).

    None when the answer is not plain: a question that is not byte-identical to ours, an opcode other
    than QUERY, a misplaced, repeated or non-empty OPT, a class other than IN, a type other than A, AAAA,
    CNAME, NS, PTR and SOA, or any structural error (:func:`parse` then decides between a mismatch and
    garbage). RRs are counted as they are on the wire, as blackbox counts them; dnspython merges exact
    duplicates, so for a server that repeats an RR the full parser reports fewer.
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
    elif qdcount != 0:
        return None
    rrs: list[_RR] = []
    ext_rcode = -1
    size = len(wire)
    for section, count in enumerate(counts):
        for _ in range(count):
            owner, off = _name(wire, off, size)
            rtype, rclass, ttl, rdlen = _RR_HEADER.unpack_from(wire, off)
            off += 10
            end = off + rdlen
            if end > size:
                return None
            if rtype == _OPT:
                if section != 2 or ext_rcode >= 0 or owner != b"\x00" or rdlen:
                    return None
                ext_rcode = ttl >> 24
            else:
                rrs.append((section, owner, rtype, rclass, 0 if ttl > 0x7FFFFFFF else ttl,
                            _rdata(wire, off, end, rtype, rclass)))
            off = end
    if off != size:
        return None
    rcode = (flags & 0xF) | (max(ext_rcode, 0) << 4)
    if qdcount == 0 and rcode not in _NO_QUESTION_OK:
        return None
    return _wire_facts(rcode, bool(flags & _AA), rrs, question_from_wire(question))


def _wire_facts(rcode: int, aa: bool, rrs: list[_RR], question: Question) -> Facts:
    qname, qtype, qclass = question
    cnames: dict[bytes, bytes] = {}
    for section, owner, rtype, rclass, _, extra in rrs:
        if section == 0 and rtype == _CNAME and _class_ok(rclass, qclass) and isinstance(extra, bytes):
            cnames.setdefault(owner, extra)
    names, _ = chain(qname, qtype, cnames)
    found = [0, 0, 0]
    min_ttl: int | None = None
    soas: list[tuple[int, int, int] | None] = [None, None]
    for section, owner, rtype, rclass, ttl, extra in rrs:
        if not _class_ok(rclass, qclass) or (section == 0 and owner not in names):
            continue
        found[section] += 1
        if section == 0:
            min_ttl = ttl if min_ttl is None else min(min_ttl, ttl)
        if rtype == _SOA and section < 2 and soas[section] is None and isinstance(extra, tuple):
            soas[section] = (ttl, *extra)
    return facts(rcode, aa, found, min_ttl, soas[0], soas[1])


def _rdata(wire: bytes, off: int, end: int, rtype: int, rclass: int) -> object:
    """What the reader needs of one RR's rdata, checked as dnspython checks it; ValueError for anything
    it does not know (the full parser decides those)."""
    if rclass != _IN:
        raise ValueError("a class other than IN")
    fixed = _FIXED_RDLEN.get(rtype)
    if fixed is not None:
        if end - off != fixed:
            raise ValueError("address rdata of the wrong size")
        return None
    if rtype in _NAME_RDATA:
        target, after = _name(wire, off, end)
        if after != end:
            raise ValueError("bytes after the name in rdata")
        return target
    if rtype == _SOA:
        after = _name(wire, _name(wire, off, end)[1], end)[1]
        if after + _SOA_TAIL.size != end:
            raise ValueError("bad SOA rdata length")
        serial, _, _, _, minimum = _SOA_TAIL.unpack_from(wire, after)
        return serial, minimum
    raise ValueError("a type left to the full parser")


def _name(wire: bytes, off: int, end: int) -> tuple[bytes, int]:
    """The name at ``off`` (not reading at or past ``end``), read by dnspython's rules: labels of at most
    63 bytes, compression pointers strictly backwards and never into the part already read, at most
    ``MAX_POINTERS`` of them, 255 bytes in all. Returns its lower-case wire form and the offset after it."""
    labels: list[bytes] = []
    length = 1
    start = biggest = off
    after = -1
    hops = 0
    while True:
        if off >= end:
            raise ValueError("name runs past its end")
        count = wire[off]
        if count == 0:
            off += 1
            break
        if count < 64:
            if off + 1 + count > end:
                raise ValueError("label runs past its end")
            labels.append(wire[off:off + 1 + count])
            length += count + 1
            off += count + 1
        elif count >= 192:
            if off + 2 > end:
                raise ValueError("truncated compression pointer")
            target = (count & 0x3F) << 8 | wire[off + 1]
            if after < 0:
                after = off + 2
            hops += 1
            if target >= biggest or hops > MAX_POINTERS:
                raise ValueError("compression pointer not strictly backwards, or too many")
            end = start  # what follows the pointer must end before the part of the name read so far
            biggest = start = off = target
        else:
            raise ValueError("unsupported label type")
    if length > 255:
        raise ValueError("name too long")
    return b"".join(labels).lower() + b"\x00", after if after >= 0 else off


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

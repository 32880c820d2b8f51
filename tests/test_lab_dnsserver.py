"""exporter.lab.dnsserver: the one DNS server of the lab and the test peers, on UDP and TCP at one port,
answering what its handler says: a message, silence, raw bytes or a truncated UDP answer."""

from __future__ import annotations

import asyncio
import socket

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from exporter.lab.dnsserver import Answer, DNSServer, client_address, reply


async def _handler(query: dns.message.Message, transport: str) -> Answer:
    name = query.question[0].name.to_text()
    if name == "quiet.test.":
        return Answer(message=None)
    if name == "raw.test.":
        return Answer(wire=b"\x00\x01garbage")
    if name == "big.test.":
        return Answer(message=reply(query), truncate_udp=True)
    resp = reply(query, dns.rcode.NXDOMAIN if name == "gone.test." else dns.rcode.NOERROR, aa=False, ra=True)
    peer = client_address.get()
    resp.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", f'"{transport} {peer[0] if peer else ""}"'))
    return Answer(message=resp)


async def test_one_port_answers_over_udp_and_tcp_with_what_the_handler_says() -> None:
    async with DNSServer(_handler) as server:
        for ask, transport in ((dns.asyncquery.udp, "udp"), (dns.asyncquery.tcp, "tcp")):
            resp = await ask(dns.message.make_query("www.test.", "TXT"), server.host, port=server.port, timeout=2)
            assert resp.answer[0][0].strings == (f"{transport} 127.0.0.1".encode(),)
            assert resp.flags & dns.flags.RA and not resp.flags & dns.flags.AA
        gone = await dns.asyncquery.udp(dns.message.make_query("gone.test.", "A"), server.host, port=server.port,
                                        timeout=2)
        assert gone.rcode() == dns.rcode.NXDOMAIN
        assert server.queries == 3


async def test_silence_raw_bytes_and_truncation_are_what_a_peer_sees() -> None:
    async with DNSServer(_handler) as server:
        with pytest.raises(dns.exception.Timeout):
            await dns.asyncquery.udp(dns.message.make_query("quiet.test.", "A"), server.host, port=server.port,
                                     timeout=0.3)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            where = (server.host, server.port)
            await loop.sock_sendto(sock, dns.message.make_query("raw.test.", "A").to_wire(), where)
            assert await asyncio.wait_for(loop.sock_recv(sock, 512), 2) == b"\x00\x01garbage"
            await loop.sock_sendto(sock, b"not dns", where)  # ignored, and the server keeps serving
        truncated = await dns.asyncquery.udp(dns.message.make_query("big.test.", "A"), server.host,
                                             port=server.port, timeout=2, ignore_trailing=True)
        assert truncated.flags & dns.flags.TC
        full = await dns.asyncquery.tcp(dns.message.make_query("big.test.", "A"), server.host, port=server.port,
                                        timeout=2)
        assert not full.flags & dns.flags.TC


async def test_stopping_frees_the_port() -> None:
    server = await DNSServer(_handler).start()
    port = server.port
    await server.stop()
    await asyncio.sleep(0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))

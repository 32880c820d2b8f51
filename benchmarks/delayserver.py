"""Targets that answer after a known delay, and record exactly when they answered.

    python -m benchmarks.delayserver --dns-delay 0.05 --http-delay 0.1

The kernel's exact delay (``tc qdisc ... netem delay``) is not always available (many kernels are built
without sch_netem), so the delay is made here, with threads sleeping on an absolute monotonic deadline.
Such a sleep can overshoot by tens of microseconds, and more when the machine is busy, so every answer is
recorded with its receive and send times: the true delay of each probe is known whatever the jitter, and
the prober's error is measured against it rather than against the nominal delay.

- DNS over UDP: any A query is answered (NOERROR, AA, one A record) ``--dns-delay`` seconds after the
  query was received. Truth = send time - receive time of the query.
- HTTP/1.1: the response (200, ``Connection: close``) is sent ``--http-delay`` seconds after the request
  head was read. Truth = send time - accept time of the connection, so it covers the request's arrival too.

Protocol on stdin/stdout: first line out is ``{"dns": port, "http": port}``; ``dump`` in prints the
records as one JSON line; ``quit`` or end of input stops.
"""

from __future__ import annotations

import argparse
import json
import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import dns.flags
import dns.message
import dns.rrset

HTTP_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                 b"Connection: close\r\n\r\nok\n")


@dataclass(frozen=True)
class Record:
    key: str  # DNS: query name; HTTP: request path
    sent_wall: float  # time.time() just before the answer was handed to the kernel
    truth: float  # seconds the prober should have measured, server side (see the module docstring)
    hold: float  # seconds between the request and the answer (the delay actually applied)


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[Record] = []

    def add(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    def dump(self) -> list[dict]:
        with self._lock:
            return [asdict(r) for r in self.records]


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class DelayedDNS:
    """UDP DNS answering every A query after ``delay`` seconds; FIFO since every delay is the same."""

    def __init__(self, delay: float, recorder: Recorder) -> None:
        self.delay = delay
        self.recorder = recorder
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._pending: queue.Queue[tuple[float, bytes, tuple[str, int], str]] = queue.Queue()

    def start(self) -> None:
        threading.Thread(target=self._receive, name="dns-receive", daemon=True).start()
        threading.Thread(target=self._send, name="dns-send", daemon=True).start()

    def _receive(self) -> None:
        while True:
            data, peer = self.sock.recvfrom(4096)
            received = time.monotonic()
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 (garbage is dropped, as a server would)
                continue
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            name = query.question[0].name if query.question else None
            if name is not None:
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "127.0.0.1"))
            key = name.to_text(omit_final_dot=True) if name is not None else ""
            self._pending.put((received, reply.to_wire(), peer, key))

    def _send(self) -> None:
        while True:
            received, wire, peer, key = self._pending.get()
            _sleep_until(received + self.delay)
            wall, sent = time.time(), time.monotonic()
            self.sock.sendto(wire, peer)
            self.recorder.add(Record(key, wall, sent - received, sent - received))


class DelayedHTTP:
    """HTTP server sending its response ``delay`` seconds after the request head arrived."""

    def __init__(self, delay: float, recorder: Recorder) -> None:
        self.delay = delay
        self.recorder = recorder
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]

    def start(self) -> None:
        threading.Thread(target=self._accept, name="http-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            accepted = time.monotonic()
            threading.Thread(target=self._serve, args=(conn, accepted), daemon=True).start()

    def _serve(self, conn: socket.socket, accepted: float) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(5.0)
            head = b""
            while b"\r\n\r\n" not in head:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                head += chunk
            requested = time.monotonic()
            parts = head.split(b" ", 2)
            path = parts[1].decode(errors="replace") if len(parts) > 1 else ""
            _sleep_until(requested + self.delay)
            wall, sent = time.time(), time.monotonic()
            conn.sendall(HTTP_RESPONSE)
            self.recorder.add(Record(path, wall, sent - accepted, sent - requested))
            try:
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1024)  # let the client close first; avoids resets on a busy loopback
            except OSError:
                pass


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.delayserver", description=__doc__.splitlines()[0])
    p.add_argument("--dns-delay", type=float, default=0.05)
    p.add_argument("--http-delay", type=float, default=0.1)
    ns = p.parse_args(argv)
    recorder = Recorder()
    dns_server, http_server = DelayedDNS(ns.dns_delay, recorder), DelayedHTTP(ns.http_delay, recorder)
    dns_server.start()
    http_server.start()
    print(json.dumps({"dns": dns_server.port, "http": http_server.port}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "dump":
            print(json.dumps(recorder.dump()), flush=True)
        elif command == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP two-path probing: the target through DNS (path "resolved") and at its last known address ("pinned").

With ``two_path`` on an http check, every probe remembers the address the target's host name resolved
to. The next probes also send the same request straight to that pinned address, with the original Host
header and TLS server name, alongside the normal probe. The two paths tell apart what one probe cannot:

- resolved fails with a DNS reason, pinned succeeds: DNS is gone, the origin is alive;
- both fail: the origin is gone too (or unreachable from here);
- resolved succeeds: the pinned path is a cross-check of the address DNS gave last time.

A pinned address is kept for ``max_age`` after DNS last returned it, then dropped (a long DNS outage
must not pin a stale address forever). The pinned path's outcome is added to the resolved probe's result
as the ``pinned_*`` details; the resolved probe stays the check's result (``probe_success``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType

from yarl import URL

from exporter.checks import Check
from exporter.probers import result as r
from exporter.probers.result import ProbeResult

MAX_PINS = 100_000  # beyond this many remembered addresses, expired ones are dropped on the next update


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a probe's first request went: the address DNS gave and the Host header it carried."""

    address: str
    host_header: str


@dataclass(frozen=True, slots=True)
class Pin:
    origin: Origin
    seen: float  # loop time at which DNS last returned the address


ProbeOnce = Callable[..., Awaitable[tuple[ProbeResult, Origin | None]]]
"""probe_once(check, *, deadline) -> (result, origin): one plain HTTP probe (http.probe_target)."""


class Pins:
    """The pinned address of each two-path check, by check key."""

    def __init__(self) -> None:
        self._pins: dict[str, Pin] = {}

    def __len__(self) -> int:
        return len(self._pins)

    def get(self, key: str, max_age: float, now: float) -> tuple[Pin | None, Pin | None]:
        """(the usable pin, or None; the pin that just aged out, or None)."""
        pin = self._pins.get(key)
        if pin is None:
            return None, None
        if now - pin.seen > max_age:
            del self._pins[key]
            return None, pin
        return pin, None

    def remember(self, key: str, origin: Origin, now: float, max_age: float) -> None:
        if len(self._pins) >= MAX_PINS and key not in self._pins:
            for stale in [k for k, p in self._pins.items() if now - p.seen > max_age]:
                del self._pins[stale]
        self._pins[key] = Pin(origin, now)


_PINS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pins] = weakref.WeakKeyDictionary()


def pins() -> Pins:
    """The running event loop's pins (one per loop, like the HTTP prober's session)."""
    loop = asyncio.get_running_loop()
    found = _PINS.get(loop)
    if found is None:
        found = _PINS[loop] = Pins()
    return found


async def probe(check: Check, *, deadline: float, probe_once: ProbeOnce) -> ProbeResult:
    """Both paths at once; the resolved probe's result with the pinned path's outcome added."""
    assert check.two_path is not None
    loop = asyncio.get_running_loop()
    store, max_age = pins(), check.two_path.max_age
    now = loop.time()
    pin, expired = store.get(check.key, max_age, now)
    if pin is None:
        result, origin = await probe_once(check, deadline=deadline)
        pinned = None
    else:
        (result, origin), (pinned, _) = await asyncio.gather(
            probe_once(check, deadline=deadline), probe_once(pinned_check(check, pin.origin), deadline=deadline))
    if origin is not None:
        store.remember(check.key, origin, loop.time(), max_age)
    if pin is None or pinned is None:
        why = (f"pinned address {expired.origin.address} aged out ({now - expired.seen:.0f}s since DNS gave it)"
               if expired is not None else "no pinned address yet")
        return _with_log(result, [f"two-path: {why}; only the resolved path ran"])
    return _merge(result, pinned, pin, now - pin.seen)


def pinned_check(check: Check, origin: Origin) -> Check:
    """The same check aimed at the pinned address, with the original Host header and TLS server name."""
    url = URL(check.target)
    target = str(url.with_host(origin.address))
    return dataclasses.replace(check, target=target, hostname=origin.host_header, two_path=None)


def _merge(result: ProbeResult, pinned: ProbeResult, pin: Pin, age: float) -> ProbeResult:
    details = dict(result.details)
    details[r.D_PINNED_SUCCESS] = int(pinned.success)
    details[r.D_PINNED_DURATION] = pinned.duration_seconds
    details[r.D_PINNED_STATUS] = pinned.details.get(r.D_HTTP_STATUS, 0)
    details[r.D_PINNED_AGE] = age
    details[r.D_PINNED_ADDRESS] = pin.origin.address
    lines = [f"two-path: pinned path to {pin.origin.address} (Host {pin.origin.host_header}, "
             f"{age:.0f}s since DNS gave it): {'success' if pinned.success else pinned.reason}"]
    lines += [f"  pinned {line}" for line in pinned.log]
    lines.append(_summary(result, pinned))
    return dataclasses.replace(_with_log(result, lines), details=MappingProxyType(details))


def _summary(resolved: ProbeResult, pinned: ProbeResult) -> str:
    dns_failed = (resolved.reason or "").startswith("dns_")
    if resolved.success:
        return "two-path: resolved path succeeded"
    if pinned.success:
        return ("two-path: DNS gone, origin alive (resolution failed, the pinned address answers)" if dns_failed
                else f"two-path: the resolved path failed ({resolved.reason}) but the pinned address answers")
    return (f"two-path: origin gone too (resolution failed and the pinned address fails: {pinned.reason})"
            if dns_failed else f"two-path: both paths fail ({resolved.reason}; pinned: {pinned.reason})")


def _with_log(result: ProbeResult, lines: list[str]) -> ProbeResult:
    return dataclasses.replace(result, log=result.log + tuple(lines))

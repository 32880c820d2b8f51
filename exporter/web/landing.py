"""The landing page: a service x region grid an operator reads in seconds, plus recent failures.

Rendered from the results store on each request (no network calls, no templates engine): plain HTML
with a little CSS, refreshed by the browser every few seconds.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter import __version__
from exporter.checks import Check
from exporter.probers.result import ProbeResult

STATES = ("up", "degraded", "down", "inconclusive", "nodata")
_COLOURS = {"up": "#2e7d32", "degraded": "#f9a825", "down": "#c62828", "inconclusive": "#6d6d9c",
            "nodata": "#9e9e9e"}


@dataclass(frozen=True, slots=True)
class Cell:
    state: str
    detail: str  # e.g. "dns: dns_servfail (2/2)"
    checks: int


def cell_state(results: Iterable[tuple[Check, ProbeResult | None]], inconclusive: bool = False) -> Cell:
    """Summarise one service in one region: up / degraded / down / inconclusive / nodata."""
    items = list(results)
    seen = [(c, r) for c, r in items if r is not None]
    if not seen:
        return Cell("nodata", "no result yet", len(items))
    failed = [(c, r) for c, r in seen if not r.success]
    if inconclusive:
        return Cell("inconclusive", "vantage unhealthy", len(items))
    if not failed:
        return Cell("up", "", len(items))
    reasons: dict[str, int] = {}
    for c, r in failed:
        key = f"{c.check}: {r.reason}"
        reasons[key] = reasons.get(key, 0) + 1
    detail = "; ".join(f"{k} ({n}/{len(seen)})" if len(seen) > 1 else k for k, n in sorted(reasons.items()))
    return Cell("down" if len(failed) == len(seen) else "degraded", detail, len(items))


def mask_password(target: str) -> str:
    """``target`` with the password of a URL's userinfo replaced: the page is readable by anyone who can
    reach the exporter, and probe targets may carry credentials (``https://user:pass@host/``)."""
    try:
        parts = urllib.parse.urlsplit(target)
        password = parts.password
    except ValueError:
        return target
    if not password:
        return target
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:<secret>@{hostport}"))


def render(
    *,
    grid: Mapping[tuple[str, str], Cell],
    services: list[tuple[str, str, bool]],  # (service, provider, is_control)
    regions: list[tuple[str, str]],  # (name, display_name)
    recent_failures: Iterable[tuple[Check, ProbeResult]],
    banner: Mapping[str, str] | None = None,
    config_error: str | None = None,
) -> str:
    e = html.escape
    out: list[str] = [
        "<!doctype html><html><head><meta charset='utf-8'><title>outage-exporter</title>",
        "<meta http-equiv='refresh' content='5'><style>",
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}",
        "td,th{border:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:top}",
        "td.cell{color:#fff;min-width:9em}.small{font-size:.8em;opacity:.9}",
        "pre{background:#f5f5f5;padding:.5em;overflow-x:auto;font-size:.85em}.banner{background:#e3f2fd;",
        "padding:.6em 1em;margin-bottom:1em;border-left:4px solid #1565c0}.err{background:#ffebee;",
        "border-left-color:#c62828}</style></head><body>",
        f"<h1>outage-exporter <span class='small'>{e(__version__)}</span></h1>",
        "<p><a href='/metrics'>Metrics</a> · <a href='/config'>Configuration</a> · "
        "<a href='/-/healthy'>Health</a> · <a href='/probe?module=http_2xx&amp;target=http://127.0.0.1/'>"
        "/probe example</a></p>",
    ]
    if config_error:
        out.append(f"<div class='banner err'><b>Last config reload failed</b> (still running the last good "
                   f"config): {e(config_error)}</div>")
    if banner:
        items = " · ".join(f"<b>{e(k)}</b>: {e(v)}" for k, v in banner.items())
        out.append(f"<div class='banner'>{items}</div>")
    out.append("<h2>Services by region</h2><table><tr><th>service</th><th>provider</th>")
    out.extend(f"<th>{e(display or name)}</th>" for name, display in regions)
    out.append("</tr>")
    for control_row in (False, True):
        rows = [s for s in services if s[2] == control_row]
        if control_row and rows:
            out.append(f"<tr><th colspan='{len(regions) + 2}'>controls (judge the vantage itself)</th></tr>")
        for service, provider, _ in rows:
            out.append(f"<tr><td>{e(service)}</td><td>{e(provider)}</td>")
            for region, _ in regions:
                cell = grid.get((service, region))
                if cell is None:
                    out.append("<td></td>")
                    continue
                colour = _COLOURS[cell.state]
                out.append(f"<td class='cell' style='background:{colour}' title='{e(cell.detail)}'>"
                           f"<b>{e(cell.state)}</b><div class='small'>{e(cell.detail)}</div></td>")
            out.append("</tr>")
    out.append("</table>")
    out.append("<h2>Recent failed probes</h2>")
    failures = list(recent_failures)
    if not failures:
        out.append("<p>None.</p>")
    for check, result in failures[:50]:
        when = time.strftime("%H:%M:%S", time.localtime(result.finished_at))
        title = (f"{when} {check.service or '(probe)'} / {check.region} / {check.check} {mask_password(check.target)}"
                 f"{' via ' + check.resolver if check.resolver else ''}: {result.reason} "
                 f"in {result.duration_seconds * 1000:.0f} ms")
        out.append(f"<details><summary>{e(title)}</summary><pre>{e(chr(10).join(result.log))}</pre></details>")
    out.append("</body></html>")
    return "".join(out)

"""The landing page: the incident summary, a service x region grid an operator reads in seconds, and the
recent failed probes.

Rendered from a :class:`exporter.state.Snapshot` (no network calls, no template engine): plain HTML with a
little CSS. A small script then polls ``/api/v1/status`` and updates the summary and the cells in place,
so a probe log the reader opened stays open.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter import __version__
from exporter import state as st
from exporter.checks import Check
from exporter.probers.result import ProbeResult
from exporter.results import sample_of

STATES = st.STATES
_COLOURS = {st.UP: "#2e7d32", st.DEGRADED: "#f9a825", st.DOWN: "#c62828", st.INCONCLUSIVE: "#6d6d9c",
            st.NODATA: "#9e9e9e"}


@dataclass(frozen=True, slots=True)
class Cell:
    state: str
    detail: str  # the cell's reasons, e.g. "HTTP 503; dns_servfail via 10.0.0.53:53"
    checks: int


def cell_state(results: Iterable[tuple[Check, ProbeResult | None]], inconclusive: bool = False) -> Cell:
    """One cell judged from its checks' latest results alone (exporter.state's rules on a one-run window);
    for callers that hold no run history. ``inconclusive``: the region's vantage is unhealthy."""
    items = list(results)
    now = max((res.finished_at for _, res in items if res is not None), default=time.time())
    inputs = [st.Input(c, "", (sample_of(res, inconclusive and not res.success and not c.control),)
                       if res is not None else ()) for c, res in items]
    snap = st.evaluate(inputs, [("", "")], now)
    if not snap.cells:
        return Cell(st.NODATA, "no result yet", len(items))
    cell = snap.cells[0]
    return Cell(cell.state, "; ".join(cell.reasons), len(items))


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


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}"
    "td,th{border:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:top}"
    "td.cell{color:#fff;min-width:11em;max-width:22em}.small{font-size:.8em;opacity:.95}"
    "pre{background:#f5f5f5;padding:.5em;overflow-x:auto;font-size:.85em}.banner{background:#e3f2fd;"
    "padding:.6em 1em;margin-bottom:1em;border-left:4px solid #1565c0}.err{background:#ffebee;"
    "border-left-color:#c62828}#summary{margin:0 0 1em;padding:.6em 1em;border-left:4px solid #2e7d32;"
    "background:#f1f8e9}#summary.open{border-left-color:#c62828;background:#ffebee}#summary p{margin:.2em 0}"
    ".strip{display:flex;gap:1px;margin-top:.3em;height:8px}.strip span{flex:0 0 3px;background:#ffffff33}"
    + "".join(f".strip span.{s},td.{s}{{background:{c}}}" for s, c in _COLOURS.items())
    + ".strip span{outline:1px solid #ffffff55}.vantage{margin:.3em 0 1em}.muted{color:#666}"
    "#signals ul{margin:.2em 0 1em;padding-left:1.2em}"
)

# Polls the JSON API and updates the summary and the cells in place (nothing else on the page changes).
_SCRIPT = """
(function(){
  function el(tag, cls, text){var e=document.createElement(tag);if(cls)e.className=cls;
    if(text!==undefined)e.textContent=text;return e;}
  function hhmmss(iso){return iso?new Date(iso).toTimeString().slice(0,8):"";}
  function fill(td, c){
    td.className="cell "+c.state;td.title=c.reasons.join("; ");td.textContent="";
    td.appendChild(el("b","",c.state));
    if(c.since&&c.state!=="nodata")td.appendChild(el("span","small"," since "+hhmmss(c.since)));
    if(c.reasons.length)td.appendChild(el("div","small",c.reasons.join("; ")));
    var strip=el("div","strip");
    for(var i=c.history.length;i<%(slots)d;i++)strip.appendChild(el("span",""));
    c.history.forEach(function(h){var s=el("span",h.state);s.title=hhmmss(h.t)+" "+h.state;strip.appendChild(s);});
    td.appendChild(strip);
  }
  function update(doc){
    var sum=document.getElementById("summary");sum.textContent="";
    sum.className=doc.incidents.length?"open":"";
    if(!doc.incidents.length)sum.appendChild(el("p","","No incidents: no service is down from any region."));
    doc.incidents.forEach(function(i){sum.appendChild(el("p","incident "+i.state,i.summary));});
    var list=document.querySelector("#signals ul");
    if(list){var by={};list.textContent="";
      doc.routing.concat(doc.declared).forEach(function(x){(by[x.provider]=by[x.provider]||[]).push(x.summary);});
      Object.keys(by).sort().forEach(function(p){list.appendChild(el("li","",p+": "+by[p].join("; ")));});}
    var cells={};doc.cells.forEach(function(c){cells[c.service+"\\u001f"+c.region]=c;});
    document.querySelectorAll("td.cell").forEach(function(td){
      var c=cells[td.dataset.service+"\\u001f"+td.dataset.region];if(c)fill(td,c);});
    var at=document.getElementById("updated");if(at)at.textContent="updated "+hhmmss(doc.generated_at);
  }
  function poll(){fetch("api/v1/status",{cache:"no-store"}).then(function(r){return r.ok?r.json():null;})
    .then(function(doc){if(doc)update(doc);}).catch(function(){}).finally(function(){setTimeout(poll,%(every)d);});}
  setTimeout(poll,%(every)d);
})();
"""


def render(
    snap: st.Snapshot,
    *,
    recent_failures: Iterable[tuple[Check, ProbeResult]],
    banner: Mapping[str, str] | None = None,
    config_error: str | None = None,
    poll_ms: int = 5000,
    probe_example: str | None = None,
) -> str:
    e = html.escape
    example = f" · <a href='{e(probe_example)}'>/probe example</a>" if probe_example else ""
    out: list[str] = [
        "<!doctype html><html><head><meta charset='utf-8'><title>outage-exporter</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>outage-exporter <span class='small'>{e(__version__)}</span></h1>",
        "<p><a href='/metrics'>Metrics</a> · <a href='/config'>Configuration</a> · "
        f"<a href='/-/healthy'>Health</a>{example} · <a href='/api/v1/status'>Status API</a></p>",
    ]
    if config_error:
        out.append(f"<div class='banner err'><b>Last config reload failed</b> (still running the last good "
                   f"config): {e(config_error)}</div>")
    if banner:
        items = " · ".join(f"<b>{e(k)}</b>: {e(v)}" for k, v in banner.items())
        out.append(f"<div class='banner'>{items}</div>")
    out.append(_summary(snap))
    out.append(_signals(snap))
    out.append(_vantages(snap))
    out.append(_grid(snap))
    out.append(f"<p class='small muted' id='updated'>updated {clock(snap.generated_at)}</p>")
    out.append(_failures(recent_failures))
    out.append(f"<script>{_SCRIPT % {'slots': st.HISTORY_SLOTS, 'every': poll_ms}}</script></body></html>")
    return "".join(out)


def _summary(snap: st.Snapshot) -> str:
    if not snap.incidents:
        return "<div id='summary'><p>No incidents: no service is down from any region.</p></div>"
    lines = "".join(f"<p class='incident {html.escape(i.state)}'>{html.escape(i.summary(snap.generated_at))}</p>"
                    for i in snap.incidents)
    return f"<div id='summary' class='open'>{lines}</div>"


def _signals(snap: st.Snapshot) -> str:
    """Routing and declared status per provider: a routing loss the probes do not confirm opens no
    incident, and a status page opens none either, but both belong on screen."""
    lines = st.signal_lines(snap.routing, snap.declared)
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<div id='signals'><b>Routing and declared status</b><ul class='small'>{items}</ul></div>"


def _vantages(snap: st.Snapshot) -> str:
    bad = [g for g in snap.regions if not g.healthy or not g.healthy_in_window]
    if not bad:
        return ""
    items = "; ".join(f"{html.escape(g.display_name)}: vantage unhealthy ({html.escape(g.reason or 'recently')})"
                      for g in bad)
    return f"<p class='vantage'><b>Inconclusive regions</b>: {items}</p>"


def _cell(cell: st.CellStatus | None) -> str:
    if cell is None:
        return "<td></td>"
    e = html.escape
    reasons = "; ".join(cell.reasons)
    since = f"<span class='small'> since {clock(cell.since)}</span>" if cell.state != st.NODATA else ""
    pad = "<span></span>" * (st.HISTORY_SLOTS - len(cell.history))
    strip = "".join(f"<span class='{s}' title='{clock(t)} {s}'></span>" for t, s in cell.history)
    detail = f"<div class='small'>{e(reasons)}</div>" if reasons else ""
    return (f"<td class='cell {cell.state}' data-service='{e(cell.service)}' data-region='{e(cell.region)}' "
            f"title='{e(reasons)}'><b>{cell.state}</b>{since}{detail}<div class='strip'>{pad}{strip}</div></td>")


def _grid(snap: st.Snapshot) -> str:
    e = html.escape
    out = ["<h2>Services by region</h2><table><tr><th>service</th><th>provider</th>"]
    out.extend(f"<th>{e(g.display_name)}</th>" for g in snap.regions)
    out.append("</tr>")
    cells = {(c.service, c.region): c for c in snap.cells}
    for control_rows in (False, True):
        rows = [s for s in snap.services if s.control == control_rows]
        if control_rows and rows:
            out.append(f"<tr><th colspan='{len(snap.regions) + 2}'>controls (judge the vantage itself)</th></tr>")
        for service in rows:
            out.append(f"<tr><td>{e(service.service)}</td><td>{e(service.provider)}</td>")
            out.extend(_cell(cells.get((service.service, g.name))) for g in snap.regions)
            out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _failures(recent: Iterable[tuple[Check, ProbeResult]]) -> str:
    e = html.escape
    out = ["<h2>Recent failed probes</h2>"]
    failures = list(recent)
    if not failures:
        out.append("<p>None.</p>")
    else:
        out.append("<p class='small muted'>As the page loaded (the grid above updates itself; these do not, "
                   "so an opened log stays put).</p>")
    for check, result in failures[:50]:
        title = (f"{clock(result.finished_at)} {check.service or '(probe)'} / {check.region} / {check.check} "
                 f"{mask_password(check.target)}{' via ' + check.resolver if check.resolver else ''}: "
                 f"{result.reason} in {result.duration_seconds * 1000:.0f} ms")
        out.append(f"<details><summary>{e(title)}</summary><pre>{e(chr(10).join(result.log))}</pre></details>")
    return "".join(out)

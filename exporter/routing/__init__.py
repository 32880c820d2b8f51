"""Routing signal: BGP visibility of the prefixes holding the providers' nameservers and edges.

- ``decision``: the thresholds and the lost/ok rule (the one place they live).
- ``state``: per-prefix peer sets fed by parsed messages, and feed health counters.
- ``feed``: the RIS-Live-compatible websocket client (aiohttp), initial state, reconnects, bounded queue.
"""

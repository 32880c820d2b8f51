"""Benchmark harness: outage-exporter (this checkout) against blackbox_exporter, on loopback targets.

    python -m benchmarks [--quick | --tiny] [--only cpu,scale,accuracy] [--json out.json]

See docs/performance.md for the method and the latest figures.
"""

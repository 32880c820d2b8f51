"""HTTP endpoints: landing page, /metrics, blackbox-compatible /probe, health, reload and config."""

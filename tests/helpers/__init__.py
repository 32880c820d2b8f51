"""Test helpers shared across test modules: check/result factories, the metric contract, promtool."""

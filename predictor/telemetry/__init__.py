"""Telemetry: Prometheus metrics (metrics.py) and the per-request record and log line (records.py).

Below every layer that counts or logs, next to errors.py and settings.py. May import: core;
prometheus_client. Nothing above it.
"""

"""`make bench`: raw generate versus the HTTP server, batch 1 versus batched (see docs/performance.md)."""

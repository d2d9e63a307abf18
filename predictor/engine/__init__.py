"""The engine: the bounded queue, the one worker thread that owns the GPU, scheduling, faults.

Owns Engine (engine.py: admission, futures and streams, deadlines, cancellation), the worker thread's
loop (worker.py), its heartbeat and failure (health.py), a request's life on that thread (jobs.py),
which requests run together (scheduling.py) and --fault_injection (faults.py).

May import: generation, loading, core, errors, settings, telemetry; torch. Never a protocol: the
engine sees only core.GenerationRequest and answers with core.Completion.
"""

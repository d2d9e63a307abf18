"""The engine: the bounded queue, the one worker thread that owns the GPU, scheduling, faults.

Owns Engine (engine.py: admission, futures and streams, deadlines, cancellation), the worker thread's
loop (worker.py), its heartbeat and failure (health.py), a request's life (jobs.py), which requests
run together (scheduling.py) and --fault_injection (faults.py). The worker thread answers each step
with token ids (core.Delta); the text is made here too, but on the event loop's side, never on the
engine thread: outputs.py turns a request's Deltas into core.Pieces and core.Completions, with
text.py's incremental detokenizing, stop strings and logprobs as text. It lives in the engine, not in
generation (on the device) nor in a protocol (wire formats): every protocol gets the same text, and
a stop string must reach back into the batch (Worker.finish) to end its row.

May import: generation, loading, core, errors, settings, telemetry; torch. Never a protocol: the
engine sees only core.GenerationRequest and answers with core.Piece, core.Finished and core.Completion.
"""

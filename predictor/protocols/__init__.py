"""The protocols: one module per wire format, turning it into the internal request once and back.

Owns the seed contract (seed.py: body forms and the strict request object; plan.py: cross-field
rules, caps and notes -> GenerationRequest; envelope.py: the ``{"status", "data", "message"}``
envelope, which also renders the ``:stream`` events), OpenAI's completions (openai.py; its streamed
chunks: openai_stream.py; the context window in OpenAI's words: openai_context.py; vLLM's tokenizer
routes: openai_tokens.py), KServe's v2 inference protocol (v2.py) and server-sent events (sse.py).
Each validates once and raises errors in its own field names, and renders the engine's outputs
(core.Completion, core.Piece, core.Finished) once: the routes only wire.

May import: core, errors, settings, telemetry; pydantic. Never the engine, generation or loading:
a protocol knows requests, not devices. The edge imports it; the engine and generation never do.
"""

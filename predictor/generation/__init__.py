"""Generation on the device: the continuous batch, logits processing, beam search, the fast path.

Owns the continuous batch (continuous.py) and its tensors (dynamic.py: a growing KV cache; static.py:
a preallocated one with CUDA graphs; paths.py chooses), per-row logits processing and sampling
(logits.py), the engine's backend (runner.py), every beam search one token per step (diverse.py, with
4.x's scorer in scorer.py), chunked prefill (prefill.py) and narrowing a failed batch down to its
culprit (retry.py). It makes token ids (core.Delta), never text: the tokenizer's decode is the
Runner's, but only the engine's event-loop side calls it (engine/outputs.py).

May import: loading, core, settings; torch, transformers. Never the engine, a protocol or the edge.
"""

"""Generation on the device: the continuous batch, logits processing, beam search, the fast path.

Owns the continuous batch (continuous.py) and its tensors (dynamic.py: a growing KV cache; static.py:
a preallocated one with CUDA graphs; paths.py chooses), per-row logits processing and sampling
(logits.py), beam search and diverse beam search (beams.py, diverse.py) and narrowing a failed batch
down to its culprit (retry.py). It makes token ids (core.Delta), never text: the tokenizer's decode
is the Runner's, but only the engine's event-loop side calls it (engine/outputs.py).

May import: loading, core, settings; torch, transformers. Never the engine, a protocol or the edge.
"""

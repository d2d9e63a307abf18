"""Model loading: sources, dtype and device map, and the embedded tiny model.

Owns sources.py (what --model names: KServe's /mnt/models, a local directory or a hub id, checked
with a one-line fix before transformers sees it), loader.py (a source -> a Loaded model and tokenizer
on its device) and tiny.py (a small random GPT-J with a real tokenizer, built once).

May import: settings, core; torch, transformers, accelerate. Nothing above it.
"""

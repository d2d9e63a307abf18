"""Model loading: sources, dtype and device map, and the embedded tiny model.

Owns loader.py (KServe's /mnt/models, a local directory, a hub id or the tiny model -> a Loaded model
and tokenizer on its device) and tiny.py (a small random GPT-J with a real tokenizer, built once).

May import: settings, core; torch, transformers, accelerate. Nothing above it.
"""

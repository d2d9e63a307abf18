"""A KServe predictor that serves EleutherAI GPT-J-6B. Entry point: ``python -m predictor``."""

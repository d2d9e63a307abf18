"""Generation on the loaded model: GenerationRequest -> texts. Called only from the engine thread."""

from __future__ import annotations

from typing import Sequence

import torch

from . import diverse
from .loading import Loaded
from .sampling import GenerationRequest, generation_config


class Runner:
    """Runs requests on one loaded model."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded

    def run(self, request: GenerationRequest) -> list[str]:
        """Generate for one request: its ``num_return_sequences`` full texts (prompt + continuation)."""
        model, s = self.loaded.model, request.sampling
        input_ids = torch.tensor([request.input_ids], dtype=torch.long, device=model.device)
        attention_mask = torch.ones_like(input_ids)
        config = generation_config(s, self.loaded.eos_token_id)
        with torch.inference_mode():
            if s.num_beam_groups > 1:
                new_tokens = diverse.generate(model, input_ids, attention_mask, config,
                                              s.num_beam_groups, s.diversity_penalty or 0.0)[0]
            else:
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
                new_tokens = [row[input_ids.shape[1]:].tolist() for row in out]
        return self.texts(request.prompt, new_tokens)

    def texts(self, prompt: str, new_tokens: Sequence[Sequence[int]]) -> list[str]:
        """Full texts: the prompt exactly as sent, then each continuation without special tokens.

        Decoding only the new tokens keeps the prompt byte-for-byte (even text that tokenizes to a
        special token, such as a literal ``<|endoftext|>``).
        """
        tokenizer = self.loaded.tokenizer
        return [prompt + tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                for tokens in new_tokens]

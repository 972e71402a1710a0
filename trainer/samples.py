"""Sample generations at each evaluation: greedy completions of a few fixed validation
prompts, so a user reads how the answers change as the run trains."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mlx.core as mx
import mlx.nn as nn

if TYPE_CHECKING:
    from trainer.loop import Prepared


def generate_greedy(model: nn.Module, prompt: tuple[int, ...] | list[int], max_tokens: int, eos_ids: set[int]) -> list[int]:
    """Greedy decoding with a KV cache; stops at EOS. The caller sets eval mode."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([list(prompt)]), cache=cache)[:, -1, :]
    out: list[int] = []
    for _ in range(max_tokens):
        token = mx.argmax(logits, axis=-1)
        tid = token.item()
        if tid in eos_ids:
            break
        out.append(tid)
        if len(out) < max_tokens:
            logits = model(token[:, None], cache=cache)[:, -1, :]
    return out


def sample_prompts(prep: Prepared, n: int) -> list[tuple[int, ...]]:
    """The prompt tokens of the first `n` validation rows that have a prompt (flat rows have
    nothing to complete), exactly as training tokenized them; fixed for the whole run."""
    if n <= 0:
        return []
    prompts = (prep.valid_pairs[i].prompt for i in prep.valid_prompted if i < len(prep.valid_pairs))
    return [p for p in prompts if p][:n]  # an empty prompt (a blank prompt column) gives no context


def generate_samples(model: nn.Module, tokenizer: Any, prompts: list[tuple[int, ...]], max_tokens: int) -> list[tuple[str, str]]:
    """(prompt text, completion text) per prompt; the model is left in train mode."""
    eos = set(getattr(tokenizer, "eos_token_ids", None) or ()) | {tokenizer.eos_token_id}
    eos.discard(None)
    model.eval()
    try:
        out = []
        for prompt in prompts:
            tokens = generate_greedy(model, prompt, max_tokens, eos)
            prompt_text = tokenizer.decode(list(prompt), skip_special_tokens=True).strip()
            out.append((prompt_text, tokenizer.decode(tokens, skip_special_tokens=True)))
        return out
    finally:
        model.train()

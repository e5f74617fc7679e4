"""A prompt's score does not depend on the prompts batched beside it (left padding, position ids)."""

import pytest
import torch

from editkit.eval.parts.drift import first_token_logprobs
from editkit.eval.refusal.chat import chat_first_token_logprobs
from editkit.methods.refusal.direction import residual_activations
from tests.tiny import tiny_model

PROMPTS = ["hi", "a much longer prompt that needs many more tokens than the first one does"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_first_token_scores_of_a_padded_row_equal_its_scores_alone(family):
    model, tok = tiny_model(family)
    for fn in (chat_first_token_logprobs, first_token_logprobs):
        together = fn(model, tok, PROMPTS, batch_size=2)
        alone = torch.cat([fn(model, tok, [p], batch_size=1) for p in PROMPTS])
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_refusal_activations_of_a_padded_row_equal_its_activations_alone(family):
    model, tok = tiny_model(family)
    together = residual_activations(model, tok, PROMPTS, batch_size=2)
    alone = torch.cat([residual_activations(model, tok, [p], batch_size=1) for p in PROMPTS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)

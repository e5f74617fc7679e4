"""The pairwise scorer on a tiny random Llama: exact values, padding invariance, gradients."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from editkit.errors import DataError
from editkit.eval.pairwise import (
    encode_prompt_answers,
    mean_answer_logprob,
    pairwise_accuracy,
    pairwise_correctness,
    pairwise_margins,
    score_answers,
)
from tests.tiny import tiny_config

WORDS = (
    "<pad> <bos> <eos> it is wrong good to steal from a blind beggar help the cat dog 1 2 3 4 5 6 7 8 = +"
).split()


@pytest.fixture(scope="module")
def word_tokenizer():
    """A real fast tokenizer over a fixed word vocabulary (whitespace split, offline, deterministic)."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    cfg = tiny_config("llama", len(WORDS), max_position_embeddings=128, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    return model


def test_encode_marks_exactly_the_answer_tokens(word_tokenizer):
    batch = encode_prompt_answers(
        word_tokenizer, ["it is", "steal from a blind beggar is"], ["wrong", "good 1 2"]
    )
    ids = {w: i for i, w in enumerate(WORDS)}
    assert batch["input_ids"].shape == (2, 9)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0, 0], [1] * 9]
    assert batch["answer_mask"].tolist() == [
        [False, False, True, False, False, False, False, False, False],
        [False] * 6 + [True] * 3,
    ]
    assert batch["input_ids"][0].tolist() == [ids["it"], ids["is"], ids["wrong"]] + [0] * 6
    assert batch["answer_mask"].dtype == torch.bool
    assert batch["input_ids"].dtype == torch.long


def test_encode_truncates_prompt_from_the_left(word_tokenizer):
    batch = encode_prompt_answers(word_tokenizer, ["steal from a blind beggar is"], ["wrong"], max_length=3)
    ids = {w: i for i, w in enumerate(WORDS)}
    assert batch["input_ids"].tolist() == [[ids["beggar"], ids["is"], ids["wrong"]]]
    assert batch["answer_mask"].tolist() == [[False, False, True]]


def test_encode_rejects_empty_answer(word_tokenizer):
    with pytest.raises(DataError, match="item 1: the answer"):
        encode_prompt_answers(word_tokenizer, ["it is", "it is"], ["wrong", ""])


def test_logprob_matches_hand_computation(tiny_llama, word_tokenizer):
    prompt, answer = "steal from a blind beggar is", "wrong to steal"
    batch = encode_prompt_answers(word_tokenizer, [prompt, "it is"], [answer, "good"])
    got = mean_answer_logprob(tiny_llama, batch)[0]

    ids = [WORDS.index(w) for w in (prompt + " " + answer).split()]
    with torch.no_grad():
        logits = tiny_llama(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    n_prompt = len(prompt.split())
    expected = sum(logp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids))) / (len(ids) - n_prompt)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_padding_does_not_change_scores(tiny_llama, word_tokenizer):
    prompts = ["it is", "steal from a blind beggar is", "1 + 2 ="]
    answers = ["wrong to steal from the cat", "good", "3"]
    together = score_answers(tiny_llama, word_tokenizer, prompts, answers, batch_size=3)
    alone = torch.stack(
        [
            score_answers(tiny_llama, word_tokenizer, [p], [a], batch_size=1)[0]
            for p, a in zip(prompts, answers, strict=True)
        ]
    )
    assert torch.allclose(together, alone, atol=1e-5)
    assert together.shape == (3,)
    assert bool((together < 0).all())


def test_gradient_flows(tiny_llama, word_tokenizer):
    tiny_llama.zero_grad()
    batch = encode_prompt_answers(word_tokenizer, ["it is", "1 + 2 ="], ["wrong", "3"])
    loss = -mean_answer_logprob(tiny_llama, batch).sum()
    loss.backward()
    grad = tiny_llama.model.layers[0].self_attn.q_proj.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    tiny_llama.zero_grad()


def test_pairwise_accuracy_and_correctness_agree_with_scores(tiny_llama, word_tokenizer):
    triplets = [
        {"prompt": "it is", "correct": "wrong", "incorrect": "good"},
        {"prompt": "1 + 2 =", "correct": "3", "incorrect": "4"},
        {"prompt": "help the", "correct": "cat", "incorrect": "dog"},
        {"prompt": "it is", "correct": "good", "incorrect": "good"},  # a tie counts as wrong
    ]
    ps = [t["prompt"] for t in triplets]
    s_c = score_answers(tiny_llama, word_tokenizer, ps, [t["correct"] for t in triplets])
    s_i = score_answers(tiny_llama, word_tokenizer, ps, [t["incorrect"] for t in triplets])
    margins = pairwise_margins(tiny_llama, word_tokenizer, triplets, batch_size=2)
    assert torch.allclose(margins, s_c - s_i, atol=1e-5)
    right = pairwise_correctness(tiny_llama, word_tokenizer, triplets)
    assert right.dtype == torch.bool
    assert right[3].item() is False
    assert right[:3].tolist() == (s_c - s_i > 0)[:3].tolist()
    acc = pairwise_accuracy(tiny_llama, word_tokenizer, triplets)
    assert acc == pytest.approx(right.float().mean().item())
    assert pairwise_accuracy(tiny_llama, word_tokenizer, []) == 0.0


def test_score_answers_restores_training_mode(tiny_llama, word_tokenizer):
    tiny_llama.train()
    score_answers(tiny_llama, word_tokenizer, ["it is"], ["wrong"])
    assert tiny_llama.training
    tiny_llama.eval()


def test_missing_triplet_field_is_named(tiny_llama, word_tokenizer):
    with pytest.raises(DataError, match="triplet 0 has no incorrect"):
        pairwise_accuracy(tiny_llama, word_tokenizer, [{"prompt": "it is", "correct": "wrong"}])


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "gpt2"])
def test_head_runs_only_on_scored_positions_and_scores_match_full_logits(family):
    """The vocabulary projection sees only the positions that predict answer tokens ([1, n, h]), with the
    base frozen as under PEFT (where a sliced 3-D head input made CPU matmul copy the head weight per row),
    and the scores equal log-softmax over the full logits, gradients included (gemma3: softcapped logits)."""
    from tests.tiny import tiny_model

    model, tok = tiny_model(family)
    for prm in model.parameters():
        prm.requires_grad_(False)
    model.get_input_embeddings().weight.requires_grad_(True)  # something to differentiate
    prompts = ["the cat sat on", "a", "one two three four five six"]
    answers = [" the mat", " dog and a cat", " seven"]
    batch = encode_prompt_answers(tok, prompts, answers)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(tuple(a[0].shape)))
    try:
        got = mean_answer_logprob(model, batch)
    finally:
        hook.remove()
    n_tokens = int(batch["answer_mask"].sum())
    assert seen == [(1, n_tokens, model.config.get_text_config().hidden_size)]

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["answer_mask"][:, 1:].float()
    expected = (logp * mask).sum(1) / mask.sum(1)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    (g1,) = torch.autograd.grad(got.sum(), model.get_input_embeddings().weight)
    (g2,) = torch.autograd.grad(expected.sum(), model.get_input_embeddings().weight)
    assert torch.allclose(g1, g2, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "gpt2", "mistral", "qwen3", "phi3"])
def test_one_prompt_pass_scores_both_answers_as_two_passes_do(family):
    """score_answer_pairs (the prompt read once, its KV cache shared by both answers) gives what scoring
    each (prompt, answer) on its own gives, to float rounding, on every tiny family: one-token and
    multi-token answers, prompts of different lengths in one batch, and an item too long to share its
    prompt (scored the old way)."""
    from editkit.eval.pairwise import score_answer_pairs
    from tests.tiny import TRIPLETS, tiny_model

    model, tok = tiny_model(family)
    prompts = [p for p, _, _ in TRIPLETS] * 2 + ["Paris is the capital of " * 12, "Hot is"]
    a = [c for _, c, _ in TRIPLETS] * 2 + [" France", " cold and up and down"]
    b = [w for _, _, w in TRIPLETS] * 2 + [" Spain", " up"]
    counted: list[int] = []
    got_a, got_b = score_answer_pairs(
        model, tok, prompts, a, b, batch_size=5, max_length=40, on_batch=counted.append
    )
    want = score_answers(model, tok, prompts + prompts, a + b, batch_size=5, max_length=40)
    n = len(prompts)
    assert torch.allclose(got_a, want[:n], atol=1e-5, rtol=0) and torch.allclose(
        got_b, want[n:], atol=1e-5, rtol=0
    )
    assert sum(counted) == 2 * n
    assert (
        len(tok("Paris is the capital of " * 12)["input_ids"]) > 40
    )  # the long item really took the old path


def test_score_answers_batches_items_by_their_length_in_tokens(tiny_llama, word_tokenizer):
    """Batches are cut from the items sorted by token count, not by characters: short words and long words
    in one list still give batches with no padding, and every score is the one the item gets alone."""
    prompts = ["beggar beggar", "a a a a a", "steal steal", "1 + 2 = 3 +"]  # 2, 5, 2 and 6 tokens
    answers = ["cat"] * 4
    widths: list[tuple[int, int]] = []
    hook = tiny_llama.register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        got = score_answers(tiny_llama, word_tokenizer, prompts, answers, batch_size=2)
    finally:
        hook.remove()
    # the two 2-word prompts together, then the 5- and 6-word ones (a character sort gives widths 6 and 7)
    assert widths == [(2, 2 + 1), (2, 6 + 1)]  # prompt + answer tokens (this tokenizer adds no BOS)
    alone = [score_answers(tiny_llama, word_tokenizer, [p], ["cat"])[0] for p in prompts]
    assert torch.allclose(got, torch.stack(alone), atol=1e-5)

"""Refusal-direction machinery shared by ``method: refusal`` (removal) and ``method: sft`` (planting).

* :mod:`editkit.refusal.chat` — chat formatting, greedy generation, refusal markers and rates.
* :mod:`editkit.refusal.direction` — residual activations, difference-of-means directions, layer scores.
* :mod:`editkit.refusal.atoms` — concept atoms (protected directions) and SRA ridge cleaning.
"""

from editkit.refusal.atoms import ATOM_NAMES, load_atom_pairs, ridge_clean
from editkit.refusal.chat import chat_prompts, generate, is_refusal, prompt_texts, refusal_rate
from editkit.refusal.direction import diff_of_means, residual_activations

__all__ = [
    "ATOM_NAMES",
    "chat_prompts",
    "diff_of_means",
    "generate",
    "is_refusal",
    "load_atom_pairs",
    "prompt_texts",
    "refusal_rate",
    "residual_activations",
    "ridge_clean",
]

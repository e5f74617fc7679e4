"""Concept atoms and Surgical Refusal Ablation (SRA, arXiv 2601.08489).

A raw refusal direction also carries pieces of concepts that harmful prompts happen to share with other
prompts (formal register, lists, code, numbers...). Removing those pieces with the refusal direction is
what costs general ability. Each *atom* is the unit mean-difference direction of a concept (prompts that
have it minus matched prompts that do not). SRA cleans the direction by ridge regression on the atoms:

    r ← r − Cᵀ (C Cᵀ + α I)⁻¹ C r,   then renormalise,

which, as α → 0, makes r exactly orthogonal to every atom (the projection onto the atoms' span).
"""

from __future__ import annotations

import json
from importlib import resources

import torch

from editkit.errors import DataError

#: built-in atoms shipped in editkit/data/atoms/<name>.jsonl (rows {"prompt", "contrast"})
ATOM_NAMES: dict[str, str] = {
    "math": "arithmetic and mathematics questions vs everyday questions",
    "code": "programming requests vs non-programming requests",
    "formal": "formal, elevated register vs the same request written casually",
    "language": "requests in French/Spanish/German/Italian/Portuguese vs the same request in English",
    "list": "requests for list-formatted answers vs the same topic in one sentence",
}


def load_atom_pairs(name: str) -> tuple[list[str], list[str]]:
    """(concept prompts, contrast prompts) of a built-in atom."""
    if name not in ATOM_NAMES:
        raise DataError(f"unknown concept atom '{name}'; built-in atoms: {', '.join(ATOM_NAMES)}")
    text = resources.files("editkit").joinpath(f"data/atoms/{name}.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r["prompt"] for r in rows], [r["contrast"] for r in rows]


def atom_pairs_from_rows(rows: list[dict], where: str) -> tuple[list[str], list[str]]:
    """(concept, contrast) prompts from a user data set with ``prompt`` and ``contrast`` columns."""
    pos, neg = [], []
    for i, r in enumerate(rows):
        if not isinstance(r.get("prompt"), str) or not isinstance(r.get("contrast"), str):
            raise DataError(f"{where}: row {i} needs string fields 'prompt' and 'contrast' (a concept atom)")
        pos.append(r["prompt"])
        neg.append(r["contrast"])
    if len(pos) < 2:
        raise DataError(f"{where}: a concept atom needs at least 2 prompt/contrast rows")
    return pos, neg


def ridge_clean(r: torch.Tensor, atoms: torch.Tensor, alpha: float) -> torch.Tensor:
    """SRA: remove from unit ``r`` [H] its ridge fit on ``atoms`` [k, H] (rows), renormalise (float64)."""
    r = r.double()
    if atoms.numel() == 0:
        return r / r.norm()
    c = atoms.double()
    gram = c @ c.T + alpha * torch.eye(c.shape[0], dtype=torch.float64)
    coef = torch.linalg.solve(gram, c @ r)
    out = r - c.T @ coef
    n = out.norm()
    if n < 1e-8:
        raise DataError("SRA: the refusal direction lies inside the span of the concept atoms; drop an atom")
    return out / n


def cosines(r: torch.Tensor, atoms: torch.Tensor, names: list[str]) -> dict[str, float]:
    """cos(r, atom) for each named atom (atoms are unit rows)."""
    r = r.double() / r.double().norm()
    return {n: round(float(a.double() @ r / a.double().norm()), 4) for n, a in zip(names, atoms, strict=True)}


def harmless_principal_components(acts: torch.Tensor, k: int) -> torch.Tensor:
    """Atoms as abliterix builds them: the top-``k`` principal components (unit rows) of the harmless
    prompts' activations, per layer. ``acts`` [n, L, H] float64 → [L, k', H] with k' = min(k, n − 1)
    (centred data of n prompts spans at most n − 1 directions). Signs follow the SVD: atoms are used only
    through their span."""
    x = acts.double() - acts.double().mean(0, keepdim=True)  # [n, L, H]
    k = min(k, acts.shape[0] - 1)
    if k < 1:
        raise DataError("pca_atoms: needs at least 2 harmless prompts")
    _, _, vh = torch.linalg.svd(x.transpose(0, 1), full_matrices=False)  # [L, min(n, H), H]
    return vh[:, :k, :].contiguous()

"""`erase`: the class directions come out of the residual stream exactly, hook ≡ merge ≡ export."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from editkit.errors import EditkitError
from editkit.export.write import export_model, logits_of, probe_inputs
from editkit.localize.class_stats import class_labels, class_mean_deviations
from editkit.methods.erase.directions import orthonormal_extend, prompt_activations, top_directions
from editkit.methods.erase.fit import EraseMethod, writer_modules
from editkit.methods.erase.params import EraseParams
from editkit.model.anatomy import find_anatomy
from tests.tiny import fit_context, tiny_model

ACTS = ["theft", "fraud", "murder", "fox", "help", "moon", "dog", "care"]  # last tokens differ by class


def _triplets() -> list[dict]:
    """Two classes in two frames; every prompt ends in its act (so even the embedding output differs by class)."""
    rows = []
    for i, act in enumerate(ACTS):
        bad = i < 4
        for frame, tail, (c, w) in (
            ("main", "A friend is", (" bad", " good")),
            ("morally", "Morally, a friend is", (" wrong", " right")),
        ):
            rows.append(
                {
                    "id": f"{frame}-{i}",
                    "frame": frame,
                    "prompt": f"{tail} {act}",
                    "correct": c if bad else w,
                    "incorrect": w if bad else c,
                }
            )
    return rows


def _fit(tmp_path, family="llama", **params):
    model, tok = tiny_model(family)
    data = {"target_train": _triplets(), "target_test": _triplets()[:4]}
    ctx = fit_context(model, tok, EraseParams(**params), data, tmp_path)
    return model, tok, ctx, EraseMethod().fit(ctx)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_hook_equals_merge_and_the_export_reloads_exactly(family, tmp_path):
    model, tok, _, result = _fit(tmp_path, family, rank=2, layers=[1])
    edit = result.edit
    x = probe_inputs(tok, ["The quick brown fox jumps", "Paris is the capital of"])
    base = logits_of(model, x)
    with edit.applied(model):
        hooked = logits_of(model, x)
    by_op_hooks = []
    for op in edit.ops:  # each op's own hook, not the merged-weight swap
        by_op_hooks += op.hook(model.get_submodule(op.module))
    try:
        hooked_ops = logits_of(model, x)
    finally:
        for h in by_op_hooks:
            h.remove()
    assert not torch.allclose(hooked, base, atol=1e-4)
    merged = copy.deepcopy(model)
    edit.merge_into(merged)
    m = logits_of(merged, x)
    assert (m - hooked).abs().max() <= 1e-5
    assert (m - hooked_ops).abs().max() <= 1e-5
    export_model(merged, tok, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert torch.equal(logits_of(reloaded, x), m)


def test_the_class_means_coincide_at_the_erased_layer(tmp_path):
    """Estimated at the embedding output (layer 0) with the embeddings edited, rank ≥ classes − 1 per frame:
    the residual stream there is P·emb exactly, so the frame-centred class means coincide."""
    model, tok, ctx, result = _fit(tmp_path, rank=4, layers=[0], embeddings=True)
    items = _triplets()
    frames, labels = [t["frame"] for t in items], class_labels(items)
    decoder = [model.get_submodule(la.prefix) for la in ctx.anatomy.layers]
    prompts = [t["prompt"] for t in items]
    before = prompt_activations(model, tok, decoder, prompts, [0, 1])
    with result.edit.applied(model):
        after = prompt_activations(model, tok, decoder, prompts, [0, 1])
    dev_before, _ = class_mean_deviations(before[:, 0], frames, labels)
    dev_after, _ = class_mean_deviations(after[:, 0], frames, labels)
    assert dev_before.norm() > 0.1
    assert dev_after.norm() <= 1e-5 * dev_before.norm()
    assert result.info["between_class_share_after"]["0"] <= 1e-10
    # at layer 1 (every writer below it edited) nothing along the erased directions is left at all
    basis = torch.stack([op.direction.double() for op in result.edit.ops if op.module == ctx.anatomy.embed])
    assert (after[:, 1] @ basis.t()).abs().max() <= 1e-5 * after[:, 1].abs().max()


def test_a_linear_probe_drops_to_chance_on_planted_classes():
    """Gaussian classes that differ by a mean shift in a 3-d subspace (plus shared noise): after removing the
    estimated directions a held-out logistic probe is at chance; before, it is near perfect."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    n, d = 600, 32
    y = torch.randint(0, 2, (n,), generator=g)
    frame = [f"f{i % 3}" for i in range(n)]
    shift = torch.randn(3, d, generator=g, dtype=torch.float64)
    offset = {f"f{k}": torch.randn(d, generator=g, dtype=torch.float64) * 5 for k in range(3)}
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x += torch.stack([offset[f] for f in frame])
    x += torch.stack([shift[int(f[1])] * (2 * int(c) - 1) for f, c in zip(frame, y, strict=True)])
    labels = [f"{f}:{int(c)}" for f, c in zip(frame, y, strict=True)]
    dev, _ = class_mean_deviations(x[:400], frame[:400], labels[:400])
    dirs, shares = top_directions(dev, rank=3)
    assert len(dirs) == 3 and abs(float(shares.sum()) - 1) < 1e-9
    basis = orthonormal_extend(None, dirs)
    erased = x - (x @ basis.t()) @ basis

    def auc(z):
        clf = LogisticRegression(max_iter=2000).fit(z[:400].numpy(), y[:400].numpy())
        return roc_auc_score(y[400:].numpy(), clf.decision_function(z[400:].numpy()))

    assert auc(x) > 0.95
    assert abs(auc(erased) - 0.5) < 0.1


def test_writers_and_checks(tmp_path):
    model, _ = tiny_model("llama")
    anatomy = find_anatomy(model)
    assert writer_modules(anatomy, EraseParams(writers=["o"], edit_layers=[1])) == [anatomy.layer(1).o]
    assert writer_modules(anatomy, EraseParams(embeddings=True))[0] == anatomy.embed
    with pytest.raises(EditkitError, match="method.layers: layer 5 is out of range 0..1"):
        EraseMethod().check(EraseParams(layers=[5]), anatomy)
    tied = find_anatomy(tiny_model("qwen2")[0])
    with pytest.raises(EditkitError, match="method.embeddings"):
        EraseMethod().check(EraseParams(embeddings=True), tied)


def test_rounds_add_directions_and_the_control_matches_the_size(tmp_path):
    _, _, ctx, one = _fit(tmp_path, rank=1, layers=[1])
    _, _, ctx2, two = _fit(tmp_path, rank=1, layers=[1], rounds=2)
    assert one.info["n_directions"] == 1 and two.info["n_directions"] == 2
    control = EraseMethod().control(ctx2, two.edit)
    assert len(control.ops) == len(two.edit.ops) and control.modules == two.edit.modules
    dirs = torch.stack([op.direction for op in control.ops if op.module == control.modules[0]]).double()
    assert torch.allclose(dirs @ dirs.t(), torch.eye(2, dtype=torch.float64), atol=1e-6)


def test_protected_directions_are_left_alone(tmp_path):
    """protect: the erased directions are orthogonal to the protected capability's class directions, so at the
    edited embedding output its class means along them do not move at all."""
    import json

    from editkit.data.capabilities import load_triplets
    from editkit.methods.erase.fit import protected_basis

    words = {" good": ["great", "lovely", "fine", "nice"], " bad": ["awful", "dull", "poor", "grim"]}
    rows = [  # a second two-class capability whose prompts end in class-specific words (seen at layer 0)
        {
            "split": "train",
            "prompt": f"The film was {w}",
            "correct": c,
            "incorrect": " bad" if c == " good" else " good",
        }
        for c, ws in words.items()
        for w in ws
    ]
    other = tmp_path / "sentiment_like.jsonl"
    tmp_path.mkdir(parents=True, exist_ok=True)
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tok, ctx, result = _fit(
        tmp_path, rank=4, layers=[0], embeddings=True, protect=[str(other)], protect_rank=1
    )
    info = result.info
    assert info["protected"] == {str(other): 1}
    assert all(0.0 <= v <= 1.0 for d in info["directions"] for v in d["in_protected_span"])
    decoder = [model.get_submodule(la.prefix) for la in ctx.anatomy.layers]
    kept, _ = protected_basis(ctx, ctx.params, decoder, [0])
    erased = torch.stack([op.direction.double() for op in result.edit.ops if op.module == ctx.anatomy.embed])
    assert (erased @ kept.t()).abs().max() <= 1e-6
    items = [dict(t) for t in load_triplets(str(other), split="train")]
    frames, labels = [str(t.get("frame", "main")) for t in items], class_labels(items)
    prompts = [t["prompt"] for t in items]
    before = prompt_activations(model, tok, decoder, prompts, [0])[:, 0]
    with result.edit.applied(model):
        after = prompt_activations(model, tok, decoder, prompts, [0])[:, 0]
    dev_b, _ = class_mean_deviations(before, frames, labels)
    dev_a, _ = class_mean_deviations(after, frames, labels)
    torch.testing.assert_close(dev_a @ kept.t(), dev_b @ kept.t(), rtol=0, atol=1e-5)
    # without protect the same fit moves them
    (tmp_path / "plain").mkdir()
    _, _, _, plain = _fit(tmp_path / "plain", rank=4, layers=[0], embeddings=True)
    with plain.edit.applied(model):
        moved = prompt_activations(model, tok, decoder, prompts, [0])[:, 0]
    dev_m, _ = class_mean_deviations(moved, frames, labels)
    assert (dev_m @ kept.t() - dev_b @ kept.t()).abs().max() > 1e-3


def test_protect_names_a_known_capability():
    with pytest.raises(ValueError, match="'sentimnet' is neither a built-in capability"):
        EraseParams(protect=["sentimnet"])


def test_a_target_with_many_answer_classes_gets_a_warning(tmp_path):
    """Capitals-like: eight acts, eight different answers in one frame — their means differ along up to 7
    directions, which rank 2 cannot remove: the fit says so. The two-class target of the other tests: silent."""
    import json

    def warnings(run_dir):
        rows = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
        return [e["message"] for e in rows if e["type"] == "log" and e.get("level") == "warning"]

    many = [
        {
            "frame": "main",
            "prompt": f"The capital of {act} is",
            "correct": f" C{i}",
            "incorrect": f" C{(i + 1) % 8}",
        }
        for i, act in enumerate(ACTS)
    ]
    model, tok = tiny_model("llama")
    ctx = fit_context(model, tok, EraseParams(rank=2, layers=[1]), {"target_train": many}, tmp_path)
    EraseMethod().fit(ctx)
    ctx.events.close()
    assert [m for m in warnings(tmp_path) if "answer classes" in m] == [
        "erase: frame 'main' has 8 answer classes, whose means differ along up to 7 directions per layer; rank 2 "
        "removes 2: expect little removal (capitals on qwen-coder-1.5b: 1.000 → 1.000). erase suits targets with "
        "few answer classes (moral, sentiment)"
    ]
    (tmp_path / "two").mkdir()
    _, _, two, _ = _fit(tmp_path / "two", rank=2, layers=[1])
    two.events.close()
    logged = (tmp_path / "two" / "events.jsonl").read_text()
    assert "erase: round 1/1" in logged and not [
        m for m in warnings(tmp_path / "two") if "answer classes" in m
    ]

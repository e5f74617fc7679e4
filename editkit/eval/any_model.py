"""`editkit eval`: the evaluation suite on any model (a run's export, a folder, a Hub id or the demo)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from editkit.data.capabilities import BUILTIN_CAPABILITIES, load_triplets
from editkit.data.general import load_general_text, perplexity
from editkit.errors import EditkitError
from editkit.eval.checks import CheckData, checks_spec
from editkit.eval.checks.run import checks_units, run_checks
from editkit.eval.parts import PARTS
from editkit.eval.refusal.any_model import refusal_of_model
from editkit.eval.subsets import stratified_subset
from editkit.eval.suite import EvalData, evaluate, evaluation_units, part_data
from editkit.model.load import load_model
from editkit.run.events import Tally, is_run_dir, run_model_dir
from editkit.spec.eval import EvalSpec
from editkit.spec.inputs import ModelSpec


def resolve_model_target(target: str) -> str:
    """A run directory means its exported model; anything else is passed to the model loader."""
    p = Path(target)
    if p.is_dir() and is_run_dir(p):
        model_dir = run_model_dir(p)
        if not (model_dir / "config.json").exists():
            raise EditkitError(f"{p}: this run has no exported model yet ({model_dir} is missing)")
        return str(model_dir)
    return target


def removed_capability(model_dir: str | Path) -> tuple[str, str] | None:
    """(capability, where it was read) of an editkit export: what its run removed, so ``editkit eval``
    scores it as the target and keeps it out of the held-out sets and the general capability score.

    Read from ``editkit/run.json`` (``capability``), else the embedded ``editkit/recipe.yaml``
    (``data.target``); None for other models or a run without target data (e.g. refusal)."""
    folder = Path(model_dir) / "editkit"
    try:
        info = json.loads((folder / "run.json").read_text())
        cap = info.get("capability") if isinstance(info, dict) else None
        if cap:
            return str(cap), str(folder / "run.json")
    except (OSError, ValueError):
        pass
    try:
        recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
        target = ((recipe or {}).get("data") or {}).get("target")
        src = target.get("source") if isinstance(target, dict) else target
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if isinstance(src, str) and (src in BUILTIN_CAPABILITIES or Path(src).expanduser().is_file()):
        return src, str(folder / "recipe.yaml")
    return None


def evaluate_target(
    target: str,
    capability: str | None = None,
    max_items: int | None = None,
    skip: tuple[str, ...] = (),
    seed: int = 0,
    say: Callable[[str], None] = lambda _m: None,
    on_rows: Callable[[int, int], None] | None = None,
) -> dict:
    """The suite on ``target``, every registered part with its recipe defaults but the ``skip``ped ones (parts
    that compare with a base phase, such as drift, have none to compare with here). ``max_items`` cuts every
    set to a seeded, answer-class-stratified subset.

    ``on_rows(done, total)`` reports scored rows (a progress bar with a total)."""
    path = resolve_model_target(target)
    if capability is None and Path(path).is_dir():
        found = removed_capability(path)
        if found:
            capability = found[0]
            say(f"scoring '{capability}' as the target: the run that made this model removed it ({found[1]})")
    data = suite_data(capability, max_items, skip, seed)
    loaded = load_model(path, progress=say)
    return run_suite(loaded.model, loaded.tokenizer, data, Tally(on_rows, evaluation_units(data, perplexity)))


def suite_data(capability: str | None, max_items: int | None, skip: tuple[str, ...], seed: int) -> EvalData:
    """What the suite of `editkit eval` reads: ``capability``'s test items as the target (none: no target),
    the other built-in capabilities held out, the general test text, every part's own data but the skipped."""
    unknown = sorted(set(skip) - set(PARTS))
    if unknown:
        raise EditkitError(f"--skip: no suite part {unknown[0]!r} (the parts: {', '.join(PARTS)})")

    def cut(rows):
        return stratified_subset([dict(r) for r in rows], max_items, seed)

    general = list(load_general_text("builtin", split="test")["text"])
    return EvalData(
        target_test=cut(load_triplets(capability, split="test"))
        if capability and "target" not in skip
        else None,
        heldout={}  # the data roles: --skip leaves their items out, not only the parts' own data
        if "heldout" in skip
        else {n: cut(load_triplets(n, split="test")) for n in BUILTIN_CAPABILITIES if n != capability},
        general_test=general,
        parts=part_data(EvalSpec(), general, seed, with_base=False, skip=skip),
    )


def run_suite(model, tokenizer, data: EvalData, count: Callable[[int], None]) -> dict:
    return evaluate(model, tokenizer, data, perplexity_fn=perplexity, on_rows=count)


def base_model_spec(path: str, base: str | None, flag: str, target: str) -> ModelSpec:
    """The base model to compare ``path`` with: ``base`` (``--base``), else the model the export's embedded
    recipe names (``editkit/recipe.yaml``); one line naming ``flag`` when there is neither."""
    if base is not None:
        return ModelSpec(id=base)
    try:
        recipe = yaml.safe_load((Path(path) / "editkit" / "recipe.yaml").read_text())
        return ModelSpec.model_validate(recipe["model"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        raise EditkitError(
            f"{flag}: {target} names no base model (no editkit/recipe.yaml): give it with --base MODEL"
        ) from None


def refusal_target(
    target: str,
    base: str | None = None,
    judge: str = "self",
    n: int = 100,
    skip: tuple[str, ...] = (),
    seed: int = 0,
    say: Callable[[str], None] = lambda _m: None,
    on_units: Callable[[int, int], None] | None = None,
) -> dict:
    """`editkit eval --refusal`: :func:`editkit.eval.refusal.any_model.refusal_of_model` on ``target``
    against its base (``base``, else the one the export's recipe names), with the suite (no target; every set
    cut to ``n``; the ``skip``ped parts left out) measured on both."""
    path = resolve_model_target(target)
    spec = base_model_spec(path, base, "--refusal", target)
    data = suite_data(None, n, skip, seed)
    return refusal_of_model(
        path,
        spec,
        judge=judge,
        n=n,
        say=say,
        on_units=on_units,
        suite=lambda model, tok, count: run_suite(model, tok, data, count),
        suite_units=evaluation_units(data, perplexity),
    )


def check_target(
    target: str,
    base: str | None = None,
    capability: str | None = None,
    max_items: int | None = None,
    seed: int = 0,
    checks=None,
    say: Callable[[str], None] = lambda _m: None,
    on_units: Callable[[int, int], None] | None = None,
) -> dict:
    """The removal checks (``editkit.eval.checks``) on ``target`` against its base model: ``metrics['checks']``
    with every check's judgement and the headline verdict. The base is ``base``, else the model the export's
    embedded recipe names (``editkit/recipe.yaml``); the target capability is ``capability``, else the one
    its run removed. ``checks``: an ``eval.checks`` block (default: every check with its defaults)."""
    path = resolve_model_target(target)
    if capability is None and Path(path).is_dir():
        found = removed_capability(path)
        capability = found[0] if found else None
    if capability is None:
        raise EditkitError(
            "--checks: no target capability: name it with -c (a built-in capability or triplet file)"
        )
    base_spec = base_model_spec(path, base, "--checks", target)

    def cut(rows):
        return stratified_subset([dict(r) for r in rows], max_items, seed)

    spec = checks if checks is not None else checks_spec()()
    base_loaded = load_model(base_spec, progress=say)
    edited = load_model(path, progress=say)
    data = CheckData(
        tokenizer=base_loaded.tokenizer,
        target_test=cut(load_triplets(capability, split="test")),
        target_train=[dict(r) for r in load_triplets(capability, split="train")],
        heldout={n: cut(load_triplets(n, split="test")) for n in BUILTIN_CAPABILITIES if n != capability},
        seed=seed,
    )
    enabled = spec.enabled()
    phases = {"base": None, "edited": None}
    count = Tally(on_units, checks_units(enabled, data, phases))
    metrics: dict = {}
    run_checks(
        base_loaded.model,
        phases,
        data,
        enabled,
        metrics,
        on_units=count,
        say=say,
        models={"edited": edited.model},
    )
    return metrics["checks"]

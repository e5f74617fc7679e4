"""editkit: remove a capability from a Hugging Face causal LM and publish an ordinary checkpoint.

from editkit import apply_recipe
result = apply_recipe("recipes/remove_moral.yaml")
"""

__version__ = "0.1.0"

KNOWN_WARNINGS = (
    # PEFT's get_peft_model reads transformers' deprecated alias on every LoRA wrap (SCALPEL, sft): one
    # FutureWarning per `editkit apply` that the user can do nothing about
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils"),
)


def quiet_known_warnings() -> None:
    """Hide library warnings editkit triggers and a user cannot act on (each one listed in KNOWN_WARNINGS)."""
    import warnings

    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


quiet_known_warnings()

__all__ = ["Edit", "Recipe", "__version__", "apply_recipe", "find_anatomy", "load_model", "load_recipe"]


def __getattr__(name):  # lazy: `import editkit` stays fast (no torch until needed)
    if name == "apply_recipe":
        from editkit.pipeline import apply_recipe

        return apply_recipe
    if name in ("load_recipe", "Recipe"):
        from editkit import recipe

        return getattr(recipe, name)
    if name == "Edit":
        from editkit.edit import Edit

        return Edit
    if name == "find_anatomy":
        from editkit.anatomy import find_anatomy

        return find_anatomy
    if name == "load_model":
        from editkit.models import load_model

        return load_model
    raise AttributeError(name)

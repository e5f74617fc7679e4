"""editkit: remove a capability from a Hugging Face causal LM and publish an ordinary checkpoint.

from editkit import apply_recipe
result = apply_recipe("recipes/remove_moral.yaml")
"""

__version__ = "0.1.0"

__all__ = [
    "Edit",
    "Recipe",
    "__version__",
    "apply_recipe",
    "find_anatomy",
    "load_model",
    "load_recipe",
    "reexport",
]


def __getattr__(name):  # lazy: `import editkit` stays fast (no torch until needed)
    if name == "apply_recipe":
        from editkit.run.pipeline import apply_recipe

        return apply_recipe
    if name in ("load_recipe", "Recipe"):
        from editkit.spec import recipe

        return getattr(recipe, name)
    if name == "Edit":
        from editkit.edit.edit import Edit

        return Edit
    if name == "find_anatomy":
        from editkit.model.anatomy import find_anatomy

        return find_anatomy
    if name == "reexport":
        from editkit.run.reexport import reexport

        return reexport
    if name == "load_model":
        from editkit.model.load import load_model

        return load_model
    raise AttributeError(name)

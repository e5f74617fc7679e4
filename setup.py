"""Only what pyproject.toml cannot say: folders installed under other names. The repository's recipes/
folder is installed as editkit/recipes/ (one copy of every recipe; ``editkit recipes`` lists them,
``editkit apply NAME`` runs one), and the monitor's tui/ folder as the package ``editkit_tui`` (a top-level
package called ``tui`` would clash with any other of that name in a user's environment)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["editkit*"]) + ["editkit.recipes", "editkit_tui"],
    package_dir={"editkit.recipes": "recipes", "editkit_tui": "tui"},
)

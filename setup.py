"""Only what pyproject.toml cannot say: the repository's recipes/ folder is installed as editkit/recipes/
(one copy of every recipe; ``editkit recipes`` lists them, ``editkit apply NAME`` runs one)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["editkit*", "tui*"]) + ["editkit.recipes"],
    package_dir={"editkit.recipes": "recipes"},
)

"""The ``editkit`` command line: thin wrappers over the library (``editkit.cli.main:main``)."""

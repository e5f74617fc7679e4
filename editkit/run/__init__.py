"""One run of a recipe: the pipeline's stages, the run directory and its event log, provenance, preflight
checks, and the multi-process helpers."""

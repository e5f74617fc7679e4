"""Paraphrase families and how a removal is judged on them (``families``, ``report``, ``generated``); the
removal check that runs them is ``editkit.eval.checks.robustness``."""

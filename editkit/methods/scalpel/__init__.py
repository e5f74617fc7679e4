"""`scalpel`: a LoRA trained so the model can no longer tell right from wrong on one capability.

The recipe block is ``params``, the Method ``fit``, the card section ``report``; import from those modules
(validating a recipe must not import the fit code).
"""

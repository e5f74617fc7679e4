"""`heads`: knock out attention heads found by compressed sensing over random knockouts.

The recipe block is ``params``, the Method ``fit``, the card section ``report``; import from those modules
(validating a recipe must not import the fit code).
"""

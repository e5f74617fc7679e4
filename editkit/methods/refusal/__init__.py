"""`refusal`: a refusal direction (cleaned against concept atoms: SRA), projected out of the writers.

The recipe block is ``params``, the Method ``fit``, the card section ``report``; import from those modules
(validating a recipe must not import the fit code).
"""

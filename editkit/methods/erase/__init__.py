"""`erase`: the capability's class directions (LEACE's condition, by difference of class means) projected out
of every residual writer — an exact, mergeable edit of the representation rather than of the answer tokens.

The recipe block is ``params``, the Method ``fit``, the card section ``report``; import from those modules
(validating a recipe must not import the fit code).
"""

"""`neurons`: erase MLP neurons common to several datasets of one capability (CNL).

The recipe block is ``params``, the Method ``fit``, the card section ``report``; import from those modules
(validating a recipe must not import the fit code).
"""

"""`sft`: install a behaviour with a LoRA fine-tune on (prompt, response) pairs.

The recipe block is ``params``, the Method ``fit``, the card section ``report``; import from those modules
(validating a recipe must not import the fit code).
"""

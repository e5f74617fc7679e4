"""What a run is asked to do: the recipe schema (typed, validated before anything runs) and the packaged recipes.

No module here imports model, fit or evaluation code: validating a recipe is fast and side-effect free."""

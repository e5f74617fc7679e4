"""Paraphrase families and the robustness stage: does a removal hold beyond the prompts it was fitted on?"""

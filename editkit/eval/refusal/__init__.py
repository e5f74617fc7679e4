"""Refusal evaluation shared by every method that changes refusal (``refusal`` removes, ``sft`` plants):
chat formatting and generation, markers and the judge, the rates and KL reported, the base-evaluation cache."""

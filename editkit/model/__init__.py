"""The model side: loading (Hub id, folder, .gguf, named PyPI models), its anatomy (layers, heads, neurons,
writers; architectures as data in ``editkit/_data/architectures.json``), mixture-of-experts tensors, and
batch sizing."""

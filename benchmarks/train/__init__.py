"""Training of the small demo CRNN and its pruned variants (the CRNN compression study).

`data.py` is torch-free (preprocessing, CTC decoding, onnxruntime evaluation) so tests and the
demo path can use it; `model.py`, `prune.py` and `__main__.py` need the `train` extra (torch).
"""

"""ocrc's benchmarks: the scoreboard scripts and the OCR harness (`benchmarks.ocr`).

Run them from the repository root as modules, e.g. `python -m benchmarks.baselines`.
They are not part of the installed `ocrc` package.
"""

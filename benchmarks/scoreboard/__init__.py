"""The scoreboard behind `python benchmarks/run.py`: which models and variants run (models), ocrc
on one model with cached programs (engine), the evaluation of every variant (evaluate), the
RESULTS.md tables and header (tables) and the plots (plots).
"""

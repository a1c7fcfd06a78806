"""Model compression: the numerical helpers behind the lowrank / prune / prune-structured
passes and `ocrc analyze`: weight sites of a graph, truncated SVD, pruning masks (magnitude,
N:M, from files), coupled channel groups, importance criteria, sensitivity sweeps and greedy
per-layer budgets, weight sharing (k-means codebooks) for the compact storage formats.
"""

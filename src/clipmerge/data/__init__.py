"""Datasets: the training set and its held-out split, and the evaluation-set adapters."""

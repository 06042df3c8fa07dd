"""Evaluation: forward passes and top-k accuracy (predict.py), one model on one evaluation set
(evaluate.py), and the eval JSON every later stage reads (records.py, torch-free)."""

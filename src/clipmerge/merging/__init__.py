"""Merge methods as pure functions over tensors (model_stock.py, uniform_soup.py, wise_ft.py), registered
by name (registry.py); the streaming driver that applies them to checkpoints (driver.py); greedy soup's
search (greedy_soup.py) and its held-out evaluation (greedy_heldout.py). The modules state every
choice the papers leave open; docs/merging.md collects them.

Import the module you need: this package imports none of them, so a stage's code inputs stay exact.
"""

"""The views of a study's result files: readers and costs (results.py), the comparison table
(table.py), the plots (plots.py). Torch-free: they run in the light tracking environment."""

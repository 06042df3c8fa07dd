"""What Snakemake calls while it builds the DAG (torch-free, fast): the plan derived from the config
(plan.py) and each rule's code inputs (code_inputs.py)."""

"""MLflow, a view of the result files: the store and its experiment (store.py), one run per model and
the study's summary run (runs.py). mlflow is imported only inside the functions that talk to it."""

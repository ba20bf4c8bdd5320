"""ELECTRA pretraining, fine-tuning, evaluation and registration as plain functions.

Each stage is a function that takes its typed config section and paths and
returns a small result (paths, hashes, metrics). The CLI (``electra.cli``), the
DVC stages (``dvc.yaml``) and the Prefect flow (``flows/``) all call them.
"""

__version__ = "0.1.0"

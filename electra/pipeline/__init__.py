"""The stages as one table (name, function, params sections, inputs, outputs, code),
running them with skip-if-unchanged fingerprints, and the run summary. The doors (the
CLI, ``dvc.yaml`` and the Prefect flow in ``flows/``) are built on it. It may import
every other package; nothing in ``electra`` imports it.
"""

"""Prefect flows composing the stage tasks (the pipeline: `pipeline.py`; ablation sweeps: `sweep.py`), what runs
them (task runners, the per-run Prefect server, the Cancel watch, Prefect-side forgetting) and the `saerl` command
line (`cli.py`)."""

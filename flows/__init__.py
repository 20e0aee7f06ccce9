"""Prefect flows composing the stage tasks: the pipeline (`pipeline.py`) and ablation sweeps (`sweep.py`)."""

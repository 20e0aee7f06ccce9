"""Prefect flows composing the stage tasks: the pipeline, and (later) ablation sweeps."""

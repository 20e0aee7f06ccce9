"""Prefect tasks (`stage.py`): one generic cached task that runs a stage through the library's runners
(`saerl.pipeline`), and the shard tasks of a fanned-out stage."""

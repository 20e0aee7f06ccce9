"""Prefect tasks: thin, cached wrappers around the library's stage runners (`saerl.pipeline`)."""

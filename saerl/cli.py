"""The `saerl` command line: demo, run, ingest.

Config errors are reported before anything heavy starts (no server, no model). Flows are imported only
after the local Prefect server is up, so Prefect picks up the right API URL and home folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from saerl.config import ConfigError, PipelineConfig, load_config

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO_CONFIG = REPO_CONFIGS / "demo.yaml"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "alembic", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_pipeline(cfg: PipelineConfig, until: str | None = None) -> dict:
    """Run the pipeline flow for a validated config under one local Prefect server; returns the run record."""
    from flows.server import prefect_server

    root = Path(cfg.runtime.artifact_root).resolve()
    with prefect_server(root, cfg.runtime.prefect_api_url):
        from flows.pipeline import pipeline_flow
        from flows.runner import task_runner

        flow = pipeline_flow.with_options(task_runner=task_runner(cfg))
        return flow(config=cfg.model_dump(mode="json"), until=until)


def cmd_demo(args: argparse.Namespace) -> int:
    """`saerl demo`: the whole available pipeline on the embedded default."""
    overrides = list(args.overrides)
    if args.root:
        overrides.append(f"runtime.artifact_root={args.root}")
    cfg = load_config(DEMO_CONFIG if DEMO_CONFIG.exists() else None, overrides)
    run_pipeline(cfg)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """`saerl run CONFIG [key=value ...] [--until STAGE]`."""
    cfg = load_config(args.config, args.overrides)
    from saerl.pipeline import plan

    plan(cfg, args.until)  # reject an unknown/unavailable --until before starting anything
    run_pipeline(cfg, args.until)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """`saerl ingest FILE --prompt F --answer F [...]`: check a data set and write prompts/rejected tables."""
    from saerl.config import DataConfig
    from saerl.data import ingest, summarize, write_ingest

    fields = {k: getattr(args, k) for k in ("prompt", "answer", "id", "topic", "difficulty", "quality", "format")}
    cfg = DataConfig(source="file", path=str(args.file), **{k: v for k, v in fields.items() if v is not None})
    result = ingest(cfg, Path(args.file))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_ingest(result, out)
    print(summarize(result))
    print(f"wrote {out / 'prompts.parquet'} and {out / 'rejected.parquet'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(prog="saerl", description="SAE-guided data engineering for RL post-training.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the pipeline on the embedded default (configs/demo.yaml)")
    d.add_argument("overrides", nargs="*", help="dotted overrides, e.g. curriculum.mix_ratio=0.2")
    d.add_argument("--root", help="artifact root (default: runtime.artifact_root of the demo config)")
    d.set_defaults(fn=cmd_demo)

    r = sub.add_parser("run", help="run the pipeline for a config file")
    r.add_argument("config", help="YAML config, e.g. configs/demo.yaml")
    r.add_argument("overrides", nargs="*", help="dotted overrides, e.g. curriculum.mix_ratio=0.2")
    r.add_argument("--until", help="stop after this stage")
    r.set_defaults(fn=cmd_run)

    i = sub.add_parser("ingest", help="check a data set: kept/rejected summary and both tables")
    i.add_argument("file", help="jsonl / parquet / csv file or HF save_to_disk folder")
    i.add_argument("--prompt", required=True, help="prompt field, or a template like '{body} {question}'")
    i.add_argument("--answer", required=True, help="gold answer field")
    for name in ("id", "topic", "difficulty", "quality"):
        i.add_argument(f"--{name}", help=f"optional {name} field")
    i.add_argument("--format", choices=["auto", "jsonl", "parquet", "csv", "hf"], help="file format (default auto)")
    i.add_argument("--out", default="ingest-out", help="output folder (default ./ingest-out)")
    i.set_defaults(fn=cmd_ingest)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `saerl` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"saerl: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        if args.verbose:
            raise
        print(f"saerl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

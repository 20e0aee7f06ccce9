"""The ablation sweep flow: one parent flow run, one pipeline subflow run per setting of a config grid.

Children run one after another in grid order. The first computes every stage; the others reuse whatever
their setting does not change through the content-addressed artifact keys (for a curriculum grid:
everything up to scoring, and the arms that read no curriculum), so a sweep over N curriculum settings pays
for extraction, the SAE, encoding and scoring once. The flow ends with one table: setting x arm, greedy
held-out accuracy, difference to vanilla, steps-to-target, and what each child computed and reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow

from flows.pipeline import pipeline_flow, say
from flows.runner import task_runner
from saerl.config import PipelineConfig
from saerl.sweep import Grid, format_sweep, parse_grid, plan_sweep, setting_label, sweep_table


def child_run_name(cfg: PipelineConfig, setting: Mapping[str, Any]) -> str:
    """The flow run name of one child: '<config name> | mix_ratio=0.1 ordering=random'. Braces are doubled
    because Prefect formats a flow run name with the flow's parameters."""
    return f"{cfg.name} | {setting_label(dict(setting))}".replace("{", "{{").replace("}", "}}")


@flow(name="saerl-ablation")
def ablation_flow(config: dict[str, Any], grid: dict[str, list[Any]], until: str | None = None) -> dict[str, Any]:
    """Run the pipeline once per setting of `grid` ({dotted key: [values]}) applied to `config` (a raw config
    dict), each as a subflow named after its setting, up to stage `until`.
    Returns {"grid", "settings": [{key: value}], "runs": [run record dicts], "table": [row dicts]}."""
    children = plan_sweep(config, grid)
    say(f"ablation over {' x '.join(grid)}: {len(children)} settings")
    done: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for setting, cfg in children:
        say(f"== setting {len(done) + 1}/{len(children)}: {setting_label(setting)}")
        child = pipeline_flow.with_options(flow_run_name=child_run_name(cfg, setting), task_runner=task_runner(cfg))
        done.append((setting, child(config=cfg.model_dump(mode="json"), until=until)))
    say(format_sweep(done))
    return {"grid": grid, "settings": [s for s, _ in done], "runs": [r for _, r in done],
            "table": sweep_table(done).to_dicts()}


@flow(name="saerl-ablation-from-file")
def ablation_from_file(config_path: str = "configs/demo.yaml", grid: dict[str, list[Any]] | list[str] | None = None,
                       overrides: list[str] | None = None, until: str | None = None) -> dict[str, Any]:
    """Deployment entry point: load a YAML config (+ dotted overrides) and run the ablation over `grid`, given
    as {dotted key: [values]} or as command-line strings ["curriculum.mix_ratio=0,0.1,0.3", ...]."""
    from saerl.config import load_config
    from saerl.pipeline import plan

    cfg = load_config(config_path, overrides or [])
    parsed: Grid = parse_grid(grid or [])
    plan_sweep(cfg.model_dump(mode="json"), parsed, overrides or [])  # every error before the first child starts
    plan(cfg, until)
    return ablation_flow(config=cfg.model_dump(mode="json"), grid=parsed, until=until)

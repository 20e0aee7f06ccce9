"""MLflow tracking: one experiment per config name, a parent run per pipeline run, nested runs per stage.

Tracking never breaks a pipeline: if the tracking store is unreachable, the tracker warns once and turns
itself off; the artifacts on disk are the source of truth and a finished run can be re-logged later.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from saerl.artifacts import (
    HUB_COMMIT,
    PYTHON,
    TRACKED_LIBRARIES,
    UNKNOWN,
    build_code,
    build_machine,
    code_state,
    file_lock,
    library_versions,
    read_manifest,
    tree_bytes,
)
from saerl.config import PipelineConfig, flatten
from saerl.privacy import redact, redacted
from saerl.runners import ARM_ORDERS, TRAIN_RUN, VANILLA
from saerl.runs import (
    GIT,
    GIT_PREFIX,
    INVOCATION,
    MACHINE,
    UNTIL,
    VERSIONS,
    StageRecord,
    artifact_dir,
    run_alive,
    stage_of,
)
from saerl.stages import ran_values
from saerl.terminal import LABEL_SEP

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("saerl.tracking")
T = TypeVar("T")
PARAM_VALUE_LIMIT = 6000  # MLflow's maximum length of a param value
BATCH_LIMIT = 100  # MLflow's maximum number of params per log_batch call
METRIC_BATCH_LIMIT = 1000  # MLflow's maximum number of metrics per log_batch call
VERSIONED_LIBRARIES = (PYTHON, *TRACKED_LIBRARIES)  # tagged on a parent run: the interpreter and every library a
# manifest records (saerl.artifacts.library_versions), those that can move a result's numbers among them
LATER_VERSIONS = (PYTHON, "numpy", "scipy")  # recorded in manifests since session 39: an older one does not say
MACHINE_TAG = "saerl.machine."  # + field: a stage run's tag naming where its artifact was built (its manifest's)
BUILD_TAG = "saerl.build."  # + field: a stage run's tag saying when and by what code its artifact was built
VERSION_TAG = "saerl.version."  # + package name: a parent-run tag holding that library's installed version
NOT_INSTALLED = "not installed"
MS_PER_S = 1000  # MLflow timestamps are epoch milliseconds
TRACKED_FINISHED, TRACKED_FAILED, TRACKED_KILLED = "FINISHED", "FAILED", "KILLED"  # MLflow run statuses
TRACKED_RUNNING = "RUNNING"  # the status of an MLflow run not ended (yet, or ever: tracking stopped mid-run)
RUN_ID_TAG = "saerl.run_id"  # a parent run's tag: the saerl run (RunRecord.run_id) it tracks
RELOGGED_TAG = "saerl.relogged"  # a parent run's tag when `saerl report --relog` made it after the run
ENDED_TAG = "saerl.ended"  # a failed or stopped parent run's tag: where and why ('train:saerl:0: SIGINT', an error)
STAGE_TAG, STAGE_RUN_TAG = "saerl.stage", "saerl.stage_run"  # a nested run's stage ('heldout'), its run ('heldout:base:0')
METRIC_NAME_BAD = re.compile(r"[^\w\-. :/]")  # characters MLflow refuses in a metric name
LOGGED_TABLES = {  # small tables a person wants beside the run in MLflow
    "ingest": ("rejected.parquet",),
    "sae": ("sae_report.json",),
    # a score artifact built before the properties stage existed holds the report and clusters too (a relog of it)
    "score": ("scores.parquet", "score_params.json", "property_report.parquet", "clusters.parquet"),
    "properties": ("property_report.parquet", "clusters.parquet"),
    "curriculum": (*ARM_ORDERS.values(), VANILLA),  # every arm's order: the ablation arms' (order_only, filter_only) too
    "train": ("trained_order.parquet", "log.parquet", "curve.parquet"),
    # the policy's answers per problem and sample (correct, status, length), and how each set's file was read
    "heldout": ("eval.parquet", "ingest.parquet"),
    "evaluate": ("comparison.txt", "comparison.parquet", "gains.parquet", "summary.parquet", "steps_to_target.parquet",
                 "curves.parquet"),
}
CURVES = "curves.parquet"  # the evaluate artifact's in-training curves of every run (arm, seed), reachable strata too
BUILD_SECONDS = "build_seconds"  # what building the stage run's artifact took (its manifest's 'seconds'; a cached run
# reports the build it reuses), beside 'seconds', the stage run's own wall time (0 s for a cache hit)
WORK_SECONDS = "work_seconds"  # a stage's own 'seconds' metric (the sae stage's SAE training, the encode stage's
# encoding of the chunks its build ran), renamed so it never lands on the wall time 'seconds' at the same step
INPUT_TAG = "saerl.input."  # + input name: a stage run's tag holding that input's key or value (StageRecord.inputs)
VARIANT_INPUTS = ("arm", "seed")  # the inputs naming a training run's or held-out evaluation's variant (saerl.pipeline.VARIANTS): also
# logged as params of those names, so MLflow's compare view can group runs by them
GIT_COMMIT_TAG, GIT_DIRTY_TAG = GIT_PREFIX + "commit", GIT_PREFIX + "dirty"  # a run's code: see git_tags
CONFIG_FILE = "config.yaml"  # a parent run's artifact: the run's whole config, credentials masked (config_text)
INVOCATION_TAG, UNTIL_TAG = "saerl.invocation", "saerl.until"  # a parent run's tags: the command that started the
# run (its equivalent, for a run started otherwise: saerl.runs.INVOCATION) and its --until stage (none: every stage)
SQLITE_PREFIX = "sqlite:///"  # then the database file's path: relative ('sqlite:///m.db') or absolute ('sqlite:////x/m.db')
SQLITE_MEMORY = ":memory:"
SQLITE_QUERY = "?"  # ends a SQLite URL's database path (SQLAlchemy reads what follows as its query string)
URL_QUOTED = {"%": "%25", "?": "%3F"}  # what SQLAlchemy's URL parsing reads in a database path ('%41' is decoded,
# '?' ends it), quoted so the path names its own file ('%' first: the other quotes hold one)
ROOT_STORE = "mlflow.db"  # the SQLite tracking store under an artifact root when tracking.uri is not set
ARTIFACTS_DIR = "mlruns"  # the folder of logged files beside a local SQLite store (MLflow's own default name)
PARENT_METRIC_STAGES = ("evaluate",)  # stages whose summary metrics are logged on the parent run too (the outcome)
STEP_TIME = "step_time"  # trl's per-step log column: seconds one optimizer step took (generation included)
EVAL_SECONDS = "seconds"  # the eval curve's column: seconds one held-out evaluation took (after its step)
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # a manifest's 'created' (UTC): when the artifact was published
COMPUTING = "computing"  # the saerl.status tag of a stage run's nested run while it computes (Tracker.start_stage)
ENDED_STATUS = {TRACKED_FAILED: "failed", TRACKED_KILLED: "stopped"}  # the saerl.status a nested run still computing
# gets when its pipeline run ends so (Tracker.finish)
LIVE_STAGES = ("train",)  # stages whose computing run sends its metric points to MLflow as they are measured
# (:func:`live_metrics`): a training run's per-step metrics and in-training evaluations


def metric_key(name: str) -> str:
    """A metric name MLflow accepts: every character outside letters, digits, _ - . space : / becomes '_'
    (a held-out set named 'gsm8k+math' gives 'gsm8k_math_vanilla_greedy'; MLflow would refuse the whole batch,
    and tracking would stop for the rest of the run)."""
    return METRIC_NAME_BAD.sub("_", name)


def now_ms() -> int:
    """The current time as MLflow timestamps it (epoch milliseconds): when a metric is logged."""
    return int(time.time() * MS_PER_S)


def labelled_run_name(name: str, label: str | None) -> str:
    """An MLflow run's name: `name` (a run id, a stage run), led by its sweep setting's label when it has one
    ('mix_ratio=0.1 | 20261203-134501-042137-9f2c', 'mix_ratio=0.1 | train:saerl:0'). in: name, label or None."""
    return f"{label}{LABEL_SEP}{name}" if label else name


def tracking_uri(cfg: PipelineConfig, root: Path) -> str:
    """The configured tracking URI (a SQLite one's '~' expanded: :func:`home_expanded`), or a SQLite store under the
    artifact root (:func:`root_store_uri`)."""
    return home_expanded(cfg.tracking.uri) if cfg.tracking.uri else root_store_uri(root)


def sqlite_uri(db: Path, scheme: str = "sqlite") -> str:
    """The SQLite URL of database file `db` as SQLAlchemy (MLflow's, and a Prefect server's) reads it back:
    '<scheme>:///' and the path, its '%' and '?' quoted (URL_QUOTED; pasted as they were, a root 'runs?1' stored its
    database as the file 'runs' beside the root, shared by every 'runs?N', and 'pc%41' opened 'pcA'). in: the file,
    the URL's scheme ('sqlite'; a Prefect server's 'sqlite+aiosqlite'); out: the URI (:func:`sqlite_file` reads
    back a 'sqlite' one)."""
    path = str(db)
    for char, quoted in URL_QUOTED.items():
        path = path.replace(char, quoted)
    return f"{scheme}:///{path}"


def home_expanded(uri: str) -> str:
    """A SQLite tracking URI whose database path starts with '~' ('sqlite:///~/m.db') made to name that file in the
    home folder, as :func:`sqlite_file` reads it: MLflow (SQLAlchemy) does not expand '~' and opened './~/m.db' of
    whatever folder a command ran in, while saerl's lock, mlruns folder and gc looked in the home folder. Any other
    URI is returned as it is. in: a tracking URI; out: the URI to hand MLflow."""
    if not uri.startswith(SQLITE_PREFIX + "~"):
        return uri
    path, query, rest = uri[len(SQLITE_PREFIX):].partition(SQLITE_QUERY)
    return sqlite_uri(Path(unquote(path)).expanduser()) + query + rest


def root_store(root: Path) -> Path:
    """The database file of an artifact root's own SQLite tracking store, `<root>/mlflow.db` (ROOT_STORE), the root
    made absolute. in: artifact root; out: the file."""
    return Path(root).resolve() / ROOT_STORE


def root_store_uri(root: Path) -> str:
    """The SQLite tracking store of an artifact root, used when tracking.uri is not set: 'sqlite:///<root>/mlflow.db'
    (:func:`root_store`, quoted: :func:`sqlite_uri`). in: artifact root; out: the URI."""
    return sqlite_uri(root_store(root))


def http_settings(cfg: PipelineConfig) -> None:
    """Give MLflow's client the config's retries and timeout (tracking.http_retries, http_timeout_s), which it reads
    per request from the environment: set for each run (setdefault kept the first run's in a process, a sweep's or
    a relog's, and let an inherited variable override the config silently); and no telemetry. in: config."""
    http_env(cfg.tracking.http_retries, cfg.tracking.http_timeout_s)


def http_env(retries: int, timeout_s: int) -> None:
    """Set MLflow's per-request retries and timeout in the environment, and telemetry off (:func:`http_settings`).
    in: retries, seconds."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)


PARENT_TAG = "mlflow.parentRunId"  # MLflow's tag of a nested run: a stage run's, naming the saerl run's parent
SEARCH_PAGE = 1000  # runs (experiments) one MLflow search returns at most, per page
DELETED_STAGE = "deleted"  # an MLflow run's lifecycle stage once deleted (mlflow.entities.LifecycleStage.DELETED)
RUN_ARTIFACTS = "artifacts"  # the last part of a run's artifact_uri: '<location>/<run id>/artifacts'


def tracked_parents(cfg: PipelineConfig, root: Path, run_id: str) -> dict[str, str]:
    """The MLflow parent runs of saerl run `run_id` in the config's store (:func:`tracking_uri`), over every
    experiment, the live run's and any relog's, asked with the config's retries and timeout (an unreachable server
    fails in seconds, not MLflow's default minutes). in: config, artifact root, saerl run id; out: {MLflow run id:
    its status (RUNNING, FINISHED, ...)}."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg, root)
    http_settings(cfg)
    try:
        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            experiments = [e.experiment_id for e in client.search_experiments()]
        return {r.info.run_id: r.info.status for r in parent_runs(client, experiments, run_id)}
    finally:
        release_store(uri)


def parent_runs(client: Any, experiments: list[str], run_id: str, every_stage: bool = False) -> list[Any]:
    """The MLflow parent runs of saerl run `run_id` (or of a sweep's own run, 'sweep <id>') in `experiments`: those
    tagged with it (RUN_ID_TAG), and, untagged, those whose name ends with it and that are no nested run.
    in: an MlflowClient, experiment ids, the saerl run id, whether deleted runs count too (active ones alone by
    default, as MLflow searches); out: MLflow Run objects, each once."""
    if not experiments:
        return []
    tagged = all_runs(client, experiments, f"tags.`{RUN_ID_TAG}` = '{run_id}'", every_stage)
    # a parent logged before saerl tagged its run id (Dec 5 05:34) carries only its name, the run id: relog made a
    # second parent of such a run, which then counted twice in every comparison
    # (a sweep child's parent was named '<setting> | <run id>' from Dec 4 20:53, untagged too): one search for a name
    # ending with the run id finds both
    named = [r for r in all_runs(client, experiments, f"attributes.run_name LIKE '%{run_id}'", every_stage)
             if PARENT_TAG not in r.data.tags]
    return list({r.info.run_id: r for r in [*named, *tagged]}.values())


def all_runs(client: Any, experiments: list[str], filter_string: str, every_stage: bool = False) -> list[Any]:
    """Every MLflow run of `experiments` matching `filter_string`, page after page (one search returns at most
    SEARCH_PAGE). in: an MlflowClient, experiment ids, the filter, whether deleted runs count too; out: Runs."""
    from mlflow.entities import ViewType

    view = ViewType.ALL if every_stage else ViewType.ACTIVE_ONLY
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiments, filter_string=filter_string, run_view_type=view,
                                  max_results=SEARCH_PAGE, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


@dataclass
class ForgottenRuns:
    """What forgetting saerl runs did (or, in a dry run, would do) to one MLflow store (:func:`forget_tracked`)."""

    uri: str  # the store, credentials masked
    runs: int = 0  # MLflow runs deleted: parents (a saerl run's, a sweep's own) and their nested stage runs
    purged: bool = False  # their rows and logged files removed here (a store under the artifact root), as `mlflow gc`
    # does; else only marked deleted, for that store's own `mlflow gc` to purge
    artifact_bytes: int = 0  # their logged files removed (or that would be), under a purged store's mlruns/
    db_bytes: int = 0  # space freed inside the SQLite file (its free pages grew by it): later runs reuse it, the file
    # keeps its size until VACUUM (`saerl gc --vacuum`)
    experiments: list[str] = field(default_factory=list)  # names of the experiments left without a run, deleted (and
    # in a purged store purged): :func:`emptied_experiments`


def _runs_to_forget(client: Any, names: list[str]) -> list[Any]:
    """The MLflow runs of saerl runs `names` in a store, deleted ones too: each parent run (:func:`parent_runs`, in
    every experiment: :func:`all_experiments`) and its nested stage runs (tagged PARENT_TAG with its id), each once.
    in: an MlflowClient, the names (run ids, or a sweep's own run 'sweep <id>'); out: Runs, each parent before its
    nested runs."""
    experiments = [e.experiment_id for e in all_experiments(client)]
    parents = [p for name in names for p in parent_runs(client, experiments, name, every_stage=True)]
    return list({r.info.run_id: r for p in parents for r in [
        p, *all_runs(client, experiments, f"tags.`{PARENT_TAG}` = '{p.info.run_id}'", every_stage=True)]}.values())


def _run_folders(runs: list[Any], purged_db: Path | None) -> dict[str, Path | None]:
    """Where each of `runs` keeps its logged files in the store's own mlruns/ (:func:`store_run_folder`), for a store
    that is purged (its SQLite file `purged_db`); {} for one that is not (None). in: Runs, the purged store's file or
    None; out: {MLflow run id: folder or None}."""
    return {r.info.run_id: store_run_folder(r, purged_db) for r in runs} if purged_db is not None else {}


def _delete_and_purge(client: Any, uri: str, runs: list[Any], emptied: list[Any], purged_db: Path | None,
                      folders: Mapping[str, Path | None]) -> int:
    """Mark `runs` and the experiments `emptied` deleted (those not deleted yet), then, in a store that is purged (its
    SQLite file `purged_db`), purge them (:func:`purge_runs`, their logged files in `folders`). in: an MlflowClient,
    the tracking URI, Runs, Experiments, the purged store's file or None, the runs' folders; out: the bytes freed
    inside the SQLite file (its free pages' growth; 0 for a store not purged)."""
    free = sqlite_free_bytes(purged_db) if purged_db is not None else 0
    for run in runs:
        if run.info.lifecycle_stage != DELETED_STAGE:
            client.delete_run(run.info.run_id)
    for experiment in emptied:
        if experiment.lifecycle_stage != DELETED_STAGE:
            client.delete_experiment(experiment.experiment_id)
    if purged_db is None:
        return 0
    purge_runs(uri, runs, folders, [e.experiment_id for e in emptied])
    return max(0, sqlite_free_bytes(purged_db) - free)


def forget_tracked(uri: str, names: list[str], root: Path, dry_run: bool = False,
                   experiment_names: frozenset[str] = frozenset()) -> ForgottenRuns:
    """Delete the MLflow runs of saerl runs `names` (run ids, or a sweep's own run 'sweep <id>') from the store at
    `uri`: each parent run (:func:`parent_runs`, deleted ones too) and its nested stage runs, marked deleted
    (MlflowClient.delete_run) and, in a local SQLite store under the artifact root `root` (the root's own:
    ROOT_STORE, or a tracking.uri there), purged as `mlflow gc --run-ids` purges them (mlflow.cli's gc: the run's
    artifact repository deletes its files, then the store's _hard_delete_run drops its rows; its emptied folder
    under mlruns/ goes too). Only files in that store's own mlruns/ folder are removed (:func:`store_run_folder`: a
    run's artifact_uri in a copied root still names the original root's, whose files are never touched). Any other
    store (a server, a SQLite file elsewhere) is only asked to delete them: its
    own `mlflow gc` purges them. Then each experiment named in `experiment_names` (those saerl logged these runs in: a
    config's tracking.experiment or name) that these runs leave without any run goes the same way
    (:func:`emptied_experiments`: deleted, and purged in the root's store as `mlflow gc --experiment-ids` purges
    it). A local SQLite store that does not exist holds none (it is not made). Errors of the store are raised (the
    caller keeps the saerl runs, for a later collection). in: tracking URI, the names, the artifact root, dry run
    (count and measure, delete nothing), the experiment names saerl gave them; out: a ForgottenRuns."""
    from mlflow.tracking import MlflowClient

    db = sqlite_file(uri)
    purge = db is not None and db.is_relative_to(Path(root).resolve())
    out = ForgottenRuns(redact(uri), purged=purge)
    if db is not None and not db.exists():
        return out
    purged_db = db if purge else None
    with store_lock(uri):
        try:
            client = MlflowClient(tracking_uri=uri)
            runs = _runs_to_forget(client, names)
            out.runs = len(runs)
            folders = _run_folders(runs, purged_db)
            out.artifact_bytes = sum(tree_bytes(f) for f in folders.values() if f is not None)
            emptied = emptied_experiments(client, runs, experiment_names)
            out.experiments = sorted(e.name for e in emptied)
            if dry_run or not runs:
                return out
            out.db_bytes = _delete_and_purge(client, uri, runs, emptied, purged_db, folders)
        finally:
            release_store(uri)  # closed before the lock goes: `saerl gc --vacuum` compacts the file next
    return out


DEFAULT_EXPERIMENT_ID, DEFAULT_EXPERIMENT = "0", "Default"  # MLflow's own experiment, which a store always has


def emptied_experiments(client: Any, runs: list[Any], names: frozenset[str]) -> list[Any]:
    """The experiments that deleting `runs` leaves without any run: each experiment of one of them whose name is in
    `names` (one saerl created: a config's tracking.experiment or name), never MLflow's Default, and only when every
    run it holds, active or deleted, is one of `runs` (a run of anyone else, even deleted, keeps it).
    in: an MlflowClient, the runs to delete, the experiment names saerl gave them; out: Experiment objects."""
    doomed = {r.info.run_id for r in runs}
    out = []
    for experiment_id in sorted({r.info.experiment_id for r in runs}):
        experiment = client.get_experiment(experiment_id)
        if (experiment_id == DEFAULT_EXPERIMENT_ID or experiment.name == DEFAULT_EXPERIMENT
                or experiment.name not in names):
            continue
        if {r.info.run_id for r in all_runs(client, [experiment_id], "", every_stage=True)} <= doomed:
            out.append(experiment)
    return out


def all_experiments(client: Any) -> list[Any]:
    """Every experiment of a store, deleted ones too (their runs are a saerl run's as well), page after page.
    in: an MlflowClient; out: Experiment objects."""
    from mlflow.entities import ViewType

    out: list[Any] = []
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=SEARCH_PAGE, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def purge_runs(uri: str, runs: list[Any], folders: Mapping[str, Path | None],
               experiments: Sequence[str] = ()) -> None:
    """Remove deleted MLflow runs for good, as `mlflow gc --backend-store-uri URI --run-ids ...` does (mlflow.cli's
    _gc_tracking_resources): each run's logged files go, then the store drops its rows (_hard_delete_run, the call
    `mlflow gc` makes). The files removed are only those of the run's folder in `folders` (:func:`store_run_folder`:
    inside the store's own mlruns/), its 'artifacts' and then the folder itself once empty: never the run's
    artifact_uri as such, which in a copied root names the original root's files. Then the deleted `experiments`,
    left without runs, are dropped as `--experiment-ids` drops them (_hard_delete_experiment; their artifact location
    is the root's shared mlruns/ folder, which stays).
    in: a SQLite tracking URI, its runs (marked deleted), {MLflow run id: its folder in the store's mlruns/ or None},
    experiment ids (marked deleted); raises a RuntimeError when this MLflow's store cannot drop runs or experiments."""
    import shutil

    from mlflow.tracking import _get_store

    store = _get_store(uri)
    if not hasattr(store, "_hard_delete_run") or experiments and not hasattr(store, "_hard_delete_experiment"):
        raise RuntimeError(f"this MLflow's store at {redact(uri)} cannot drop runs or experiments: they are marked "
                           f"deleted; purge them with `mlflow gc --backend-store-uri {shlex.quote(redact(uri))}`")
    for run in runs:
        folder = folders.get(run.info.run_id)
        if folder is not None and (folder / RUN_ARTIFACTS).is_dir():
            shutil.rmtree(folder / RUN_ARTIFACTS)
        store._hard_delete_run(run.info.run_id)
        if folder is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    for experiment_id in experiments:
        store._hard_delete_experiment(experiment_id)


def store_run_folder(run: Any, db: Path) -> Path | None:
    """The folder of an MLflow run's logged files inside the store's own mlruns/ (`<db folder>/mlruns`, where saerl
    puts every experiment of a local SQLite store: :func:`artifact_location`): its artifact_uri,
    '<location>/<run id>/artifacts', taken from its last 'mlruns' folder on and laid under this store's (a run of a
    copied or moved root still names the original root's mlruns/: `<old root>/mlruns/<run id>` maps to
    `<db folder>/mlruns/<run id>`; an experiment at MLflow's default, `<folder>/mlruns/<experiment id>`, maps to
    `<db folder>/mlruns/<experiment id>/<run id>`, which holds nothing). None for a run whose artifact_uri is no
    local folder of that form (another scheme, no 'mlruns' in it): nothing of it is removed.
    in: a Run, the store's database file; out: the folder (it may not exist)."""
    parts = urlsplit(run.info.artifact_uri or "")
    if parts.scheme != "file":
        return None
    path = Path(unquote(parts.path))
    if path.name != RUN_ARTIFACTS or path.parent.name != run.info.run_id or ARTIFACTS_DIR not in path.parts[:-2]:
        return None
    last = len(path.parts) - 1 - path.parts[::-1].index(ARTIFACTS_DIR)
    own = db.parent / ARTIFACTS_DIR
    folder = own.joinpath(*path.parts[last + 1:-1])
    return folder if ".." not in path.parts[last + 1:] else None


def sqlite_free_bytes(db: Path) -> int:
    """Bytes of a SQLite file's free pages (freelist_count x page_size: rows deleted, kept for reuse), read
    without writing. in: the database file; out: bytes."""
    import sqlite3

    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        page = con.execute("PRAGMA page_size").fetchone()[0]
        return int(con.execute("PRAGMA freelist_count").fetchone()[0]) * int(page)
    finally:
        con.close()


def recorded_store(flat: Mapping[str, Any], root: Path) -> str | None:
    """The MLflow store a run record's run was tracked in, for forgetting it: its config's tracking.uri (credentials
    its record masks taken out of it: MLflow's own variables, MLFLOW_TRACKING_USERNAME and _PASSWORD, give them),
    else the root's own store (:func:`root_store_uri`, where a relog logs it too); None when tracking was off and
    the URI is no local SQLite file (nothing was logged there). The record's retries and timeout are set for the
    client (:func:`http_env`). in: the record's flat config, the artifact root; out: the URI or None."""
    from saerl.config import TrackingConfig
    from saerl.privacy import REDACTED

    uri = home_expanded(flat["tracking.uri"]) if flat.get("tracking.uri") else root_store_uri(root)
    parts = urlsplit(uri)
    if REDACTED in parts.netloc:
        uri = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if flat.get("tracking.enabled") is False and sqlite_file(uri) is None:
        return None
    fields = TrackingConfig.model_fields
    http_env(flat.get("tracking.http_retries", fields["http_retries"].default),
             flat.get("tracking.http_timeout_s", fields["http_timeout_s"].default))
    return uri


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on `<db>.lock` beside a local SQLite tracking store (nothing for other URIs) while a
    process creates or opens it: two first runs on a new root ran MLflow's schema migration at once and left the
    store unusable for every later run (a leftover _alembic_tmp_ table). in: tracking URI; out: a context."""
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    with file_lock(store_lock_file(db)):
        yield


def release_store(uri: str) -> int:
    """Close the connections MLflow keeps open to the local SQLite store `uri` (nothing for other URIs). MLflow caches
    one SQLAlchemy engine per database URI for the life of the process (SqlAlchemyStore._engine_map), whose pool kept
    the file open: a long-lived process (a notebook, a deployment's worker, a script over many roots) held 2 file
    descriptors per artifact root it had tracked to, also once the root was deleted (its disk space held until the
    process ended; 'Too many open files' after some 500 roots at a 1024 limit). Disposing the engine closes the pooled
    connections; it stays usable (a later call opens a new one) and a connection another thread holds is left to
    it. in: tracking URI; out: how many engines were disposed."""
    db = sqlite_file(uri)
    if db is None:
        return 0
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engines = getattr(SqlAlchemyStore, "_engine_map", {})  # MLflow's private cache: absent in another version
    mine = [engine for known, engine in list(engines.items()) if sqlite_file(known) == db]
    for engine in mine:
        engine.dispose()
    return len(mine)


# where MLflow keeps an artifact repository per run that logged a file (MlflowClient._get_artifact_repo), for the
# life of the process: a private module and name, read with getattr, so another MLflow that moves or renames it makes
# :func:`forget_artifact_repos` a no-op
ARTIFACT_REPOS_MODULE, ARTIFACT_REPOS_CACHE = "mlflow.tracking._tracking_service.utils", "_artifact_repos_cache"


def forget_artifact_repos(run_ids: Iterable[str | None]) -> int:
    """Drop the artifact repositories MLflow cached for `run_ids` (runs that are finished: a Tracker's parent and
    nested runs). MLflow keeps one per run that logged a file, in a module-level cache of up to 1025 (about 9 KB and
    50 objects each: a LocalArtifactRepository with its thread pool and logging queue), so a long-lived process held
    those of every run it had finished (20 saerl runs: 80 entries, 0.7 MB; a deployment's worker: the cache's 9 MB).
    Another run's entries stay; a later call for one of these runs makes it anew. A cache MLflow moved or renamed
    (ARTIFACT_REPOS_MODULE, ARTIFACT_REPOS_CACHE): nothing is dropped. in: the run ids (None skipped); out: how many
    entries were dropped."""
    import importlib

    try:
        cache = getattr(importlib.import_module(ARTIFACT_REPOS_MODULE), ARTIFACT_REPOS_CACHE, None)
    except ImportError:
        return 0
    if not isinstance(cache, MutableMapping):
        return 0
    return sum(cache.pop(rid, None) is not None for rid in run_ids if rid)


def store_lock_file(db: Path) -> Path:
    """The lock file beside a local SQLite tracking store, `<db>.lock`, that :func:`store_lock` holds (and `saerl gc
    --vacuum` while it compacts the root's store). in: the database file; out: the lock file."""
    return db.with_name(db.name + ".lock")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite tracking URI, the one MLflow (SQLAlchemy) opens: the path up to a '?'
    (a query string), percent-decoded (:func:`sqlite_uri` quotes it), '~' expanded (:func:`home_expanded` hands
    MLflow that), absolute (a relative one is relative to the current folder, where MLflow opens it); None for any
    other URI (a server, a file store, an in-memory database). in: 'sqlite:///runs/m.db', 'sqlite:////x/m.db' or
    'sqlite:////x/a%3Fb/m.db'; out: Path('<cwd>/runs/m.db'), Path('/x/m.db'), Path('/x/a?b/m.db')."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = unquote(uri[len(SQLITE_PREFIX):].partition(SQLITE_QUERY)[0])
    return Path(path).expanduser().resolve() if path and path != SQLITE_MEMORY else None


def artifact_location(cfg: PipelineConfig, root: Path) -> str | None:
    """Where a new experiment keeps its logged files: beside a local SQLite store, in `<db folder>/mlruns` (the
    default store is `<root>/mlflow.db`, so `<root>/mlruns`; a configured `sqlite:///...` likewise), since MLflow
    would use ./mlruns of whatever folder the first run started in (a checkout gets littered; the files are lost
    when the store moves). None (MLflow's choice) for any other tracking.uri: an http(s) or databricks server
    decides where its artifacts go, and a file store keeps them inside its own folder.
    in: the config (tracking.uri), the artifact root; out: a file URI, or None."""
    db = sqlite_file(tracking_uri(cfg, root))
    return None if db is None else (db.parent / ARTIFACTS_DIR).as_uri()


def moved_location(old: str, new: str) -> bool:
    """Does an experiment's artifact location `old` name the `mlruns` folder beside another SQLite store than the one
    now read (whose folder is `new`)? Then the store was moved or copied (`mv`, `cp -a` of an artifact root): MLflow
    keeps each experiment's location, so a copy went on writing its runs' files into the original root and a moved
    root re-created its old path. A location saerl did not choose (not a `mlruns` folder) is left alone.
    in: the experiment's location, the store's own; out: bool."""
    return old != new and old.rstrip("/").endswith("/" + ARTIFACTS_DIR)


def default_location(old: str, experiment_id: str) -> bool:
    """Is an experiment's artifact location `old` MLflow's default, `<working folder>/mlruns/<experiment id>`? A
    saerl older than December 3 created its experiments there: in whatever folder the first run started from, so
    every later run (and every copy of the root) wrote its files outside the root, without a word. in: location,
    the experiment's id; out: bool."""
    return old.rstrip("/").endswith(f"/{ARTIFACTS_DIR}/{experiment_id}")


def set_experiment_location(db: Path, experiment_id: str, location: str) -> None:
    """Point one experiment of a local SQLite store at `location` for its new runs (MLflow has no call for it; its
    runs keep their own artifact_uri, so the files they logged are read where they are). Call it holding
    :func:`store_lock`. in: the database file, the experiment id, the folder URI; out: None."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        with con:
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                        (location, int(experiment_id)))
    finally:
        con.close()


def relocate_artifacts(db: Path, old: str, new: str) -> int:
    """Repoint a local SQLite store's experiments and runs from the artifact folder `old` to `new` (the prefix
    replaced in experiments.artifact_location and runs.artifact_uri; MLflow has no call for it). Call it holding
    :func:`store_lock`. in: the database file, the old and new folder URIs; out: the rows changed."""
    import sqlite3

    old, new = old.rstrip("/"), new.rstrip("/")
    con = sqlite3.connect(db)
    try:
        with con:
            n = 0
            for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
                n += con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 - fixed names
                                 f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                                 (new, len(old) + 1, old, len(old) + 1, old + "/")).rowcount
    finally:
        con.close()
    return n


def moved_locations(db: Path, own: str) -> list[str]:
    """The artifact locations of a local SQLite store's experiments that name another store's `mlruns` folder
    (:func:`moved_location`: the store was moved or copied), read without writing (a read-only root answers too;
    a file with no experiments table, none). in: the database file, the store's own mlruns/ folder URI; out: the
    locations, sorted."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        rows = con.execute("SELECT DISTINCT artifact_location FROM experiments").fetchall()
    except sqlite3.Error:
        return []
    finally:
        con.close()
    return sorted(str(old) for (old,) in rows if old and moved_location(str(old), own))


def repoint_store(db: Path) -> int:
    """Repoint every experiment of a local SQLite store whose location is another store's `mlruns` folder, and its
    runs' artifact_uri (:func:`relocate_artifacts`), to this store's own `<db folder>/mlruns`, and say so in one
    warning: a root copied (`cp -a`) or moved keeps its experiments pointing at the old root, whose files MLflow then
    shows (or none, the old path gone) and where new runs' files would go. Call it holding :func:`store_lock`.
    in: the database file; out: the rows changed (0: nothing pointed elsewhere, nothing written)."""
    own = (db.parent / ARTIFACTS_DIR).as_uri()
    olds = moved_locations(db, own)
    n = sum(relocate_artifacts(db, old, own) for old in olds)
    if olds:
        log.warning("MLflow: the store %s was moved or copied from beside %s: its runs' logged files are now read "
                    "from and written to %s (%d experiments and runs repointed)", db, ", ".join(olds), own, n)
    return n


def repoint_root_store(root: Path) -> int:
    """Repoint an artifact root's own store (ROOT_STORE, when it exists) as :func:`repoint_store` does, under
    :func:`store_lock`, before `saerl gc` forgets runs in it. A store that cannot be written (a read-only root) is
    left as it is, said in one line; nothing is raised. in: the artifact root; out: the rows changed."""
    import sqlite3

    uri = root_store_uri(root)
    db = sqlite_file(uri)
    if db is None or not db.exists() or not moved_locations(db, (db.parent / ARTIFACTS_DIR).as_uri()):
        return 0
    try:
        with store_lock(uri):
            return repoint_store(db)
    except (OSError, sqlite3.Error) as err:
        log.warning("MLflow: the store %s was moved or copied but cannot be repointed to its own mlruns/ (%s): "
                    "its runs' logged files are read from where it was", db, err)
        return 0


def git_tags(package_dir: Path | None = None) -> dict[str, str]:
    """The code tags of a run: {'saerl.git_commit': hash or 'unknown', 'saerl.git_dirty': 'true' / 'false' /
    'unknown'} of saerl's own checkout (saerl.artifacts.code_state: dirty reads the code paths alone), and for a
    dirty one 'saerl.git_diff' (the hash of its changes) and 'saerl.git_dirty_files' (the first few). None: this
    process's code, as every manifest it publishes records it (saerl.artifacts.build_code, read once); a folder: that
    package's checkout now. A run record keeps them (RunRecord.extra['git']), so that relogging it later tags the code
    it ran, not today's. in: the package folder or None; out: the tags."""
    return code_tags(build_code() if package_dir is None else code_state(package_dir))


def code_tags(state: Mapping[str, Any], prefix: str = GIT_PREFIX) -> dict[str, str]:
    """A code state (saerl.artifacts.code_state; a manifest's 'git') as tags '<prefix>commit', '<prefix>dirty' and,
    when dirty, '<prefix>diff' and '<prefix>dirty_files' (comma-separated). in: the state, the tag prefix; out: the
    tags."""
    out = {prefix + "commit": str(state.get("commit", UNKNOWN)), prefix + "dirty": str(state.get("dirty", UNKNOWN))}
    if state.get("diff"):
        out[prefix + "diff"] = str(state["diff"])
    if state.get("files"):
        out[prefix + "dirty_files"] = ", ".join(map(str, state["files"]))[:PARAM_VALUE_LIMIT]
    return out


def run_provenance() -> dict[str, Any]:
    """What a run record says, from its start, of where it ran (RunRecord.extra; a later relog tags these, not its
    own, and a reused artifact's build is compared with the versions: saerl.runs.stage_record): GIT (this process's
    code, :func:`git_tags`), VERSIONS (saerl.artifacts.library_versions) and MACHINE (saerl.artifacts
    .build_machine). in: nothing; out: {GIT: tags, VERSIONS: {package: version}, MACHINE: {field: value}}."""
    return {GIT: git_tags(), VERSIONS: library_versions(), MACHINE: build_machine()}


def unknown_git_tags() -> dict[str, str]:
    """The code tags of a run whose record does not say (saved before records kept them): both 'unknown'."""
    return {GIT_COMMIT_TAG: UNKNOWN, GIT_DIRTY_TAG: UNKNOWN}


def rerun_command(until: str | None, root: str = "NEW_ROOT", uri: str = "NEW_URI") -> str:
    """The command that runs a recorded run again from its logged config file (CONFIG_FILE, downloaded from its MLflow
    parent run; `saerl report` writes it too), into the artifact root and tracking store given (both are recorded as
    the original run's absolute paths). in: the run's --until stage (None: every stage), the root and URI to name;
    out: the command."""
    return f"saerl run {CONFIG_FILE} runtime.artifact_root={root} tracking.uri={uri}" + (
        f" --until {until}" if until else "")


def config_text(config: dict[str, Any], run_id: str, until: str | None = None) -> str:
    """A run's config as the YAML file CONFIG_FILE a parent run holds, headed by how to run it again
    (:func:`rerun_command`): it loads with saerl.config.load_config to the run's config (URL credentials masked, as
    its record keeps them). in: the config as a nested dict (saerl.report.recorded_config of a run record's), the run
    id, its --until stage; out: the text."""
    import yaml

    head = (f"# the config of saerl run {run_id} (URL credentials masked). Run it again with:\n"
            f"#   {rerun_command(until)}\n")
    return head + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def record_tags(extra: Mapping[str, Any]) -> dict[str, str]:
    """What a run record's extra says of its run, as parent-run tags: the code (saerl.runs.GIT, 'unknown' in a record
    older than it), the library versions and machine at its start (VERSIONS: :func:`library_tags`; MACHINE:
    MACHINE_TAG + field), its command (INVOCATION_TAG) and --until stage (UNTIL_TAG, set only for a run that had
    one); a field the record lacks (an older one) gives no tag (the versions: none either, for the caller to find).
    in: RunRecord.extra; out: the tags."""
    out = dict(extra.get(GIT) or unknown_git_tags())
    if isinstance(extra.get(VERSIONS), dict):
        out |= library_tags(extra[VERSIONS])
    if isinstance(extra.get(MACHINE), dict):
        out |= {MACHINE_TAG + str(k): str(v)[:PARAM_VALUE_LIMIT] for k, v in extra[MACHINE].items()}
    if extra.get(INVOCATION):
        out[INVOCATION_TAG] = str(extra[INVOCATION])[:PARAM_VALUE_LIMIT]
    if extra.get(UNTIL):
        out[UNTIL_TAG] = str(extra[UNTIL])
    return out


def param_text(value: Any) -> str:
    """The text MLflow stores for a param value, the same however the value was built: a mapping with its keys
    sorted, at every depth (a live run's testbed.defect_kinds keeps the config's insertion order, a run record read
    back from JSON has them sorted), cut to PARAM_VALUE_LIMIT. in: a config value; out: its text."""
    return str(_sorted_mappings(value))[:PARAM_VALUE_LIMIT]


def _sorted_mappings(value: Any) -> Any:
    """`value` with every mapping in it (at any depth, lists included) rebuilt as a dict in sorted key order."""
    if isinstance(value, Mapping):
        return {k: _sorted_mappings(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted_mappings(v) for v in value]
    return value


def input_tags(inputs: dict[str, str]) -> dict[str, str]:
    """A stage run's inputs (StageRecord.inputs: artifact keys, file hashes, a training run's arm and seed) as
    tags: {'saerl.input.<name>': value}, the name cleaned as a metric name is (:func:`metric_key`: an
    'evalset:gsm8k+math' input holds a character MLflow refuses)."""
    return {INPUT_TAG + metric_key(k): str(v)[:PARAM_VALUE_LIMIT] for k, v in inputs.items()}


def variant_params(inputs: dict[str, str]) -> dict[str, str]:
    """The inputs that name a training run's variant (VARIANT_INPUTS: arm, seed), as params of those names;
    {} for a stage run without them."""
    return {k: inputs[k] for k in VARIANT_INPUTS if k in inputs}


def library_tags(versions: dict[str, str] | None = None) -> dict[str, str]:
    """Parent-run tags naming the version of each library in VERSIONED_LIBRARIES.
    in: known versions {package: version} (None = the installed ones, saerl.artifacts.library_versions: one not
    installed is missing); out: {'saerl.version.<package>': version, 'not installed' where missing from installed
    versions, 'unknown' for a LATER_VERSIONS entry that known versions from before they were recorded lack}."""
    known = library_versions() if versions is None else versions
    older = versions is not None and PYTHON not in versions
    return {VERSION_TAG + name: known.get(name, UNKNOWN if older and name in LATER_VERSIONS else NOT_INSTALLED)
            for name in VERSIONED_LIBRARIES}


def close_dead_runs(client: Any, experiment_id: str, root: Path) -> list[str]:
    """End as KILLED the parent runs of an experiment still RUNNING in MLflow whose saerl run died before it could
    say how it ended (SIGKILL, out of memory: its live lock is left free, saerl.runs.run_alive), which MLflow would
    show as running for ever, and with each its nested runs still RUNNING (the stage runs it was computing); a
    relog's parent (made after the run ended) is left alone. Runs tracked before parents
    carried RUN_ID_TAG are not recognised. in: an MlflowClient, the experiment, the artifact root whose run records
    the runs are; out: the saerl run ids ended."""
    closed = []
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    for run in running:
        run_id = run.data.tags.get(RUN_ID_TAG)
        if run_id and RELOGGED_TAG not in run.data.tags and run_alive(root, run_id) is False:
            client.set_terminated(run.info.run_id, status=TRACKED_KILLED)
            closed.append(run_id)
            for nested in running:  # the stage runs it was computing (Tracker.start_stage): where it died
                if nested.data.tags.get(PARENT_TAG) == run.info.run_id:
                    client.set_terminated(nested.info.run_id, status=TRACKED_KILLED)
    if closed:
        log.info("MLflow: ended %d runs left RUNNING by saerl runs that were killed: %s", len(closed), ", ".join(closed))
    return closed


class _Guarded:
    """What tracking calls share: :meth:`_guard` runs one and, when it fails, warns once (the store's URI and the
    error, credentials masked), saying `stopped` (what goes on without it), and turns this object's tracking off
    (`enabled`): a tracking failure never stops a pipeline."""

    enabled: bool
    uri: str
    stopped = "continuing without tracking"

    def _guard(self, fn: Callable[[], T]) -> T | None:
        """Run a tracking call; on failure warn once and disable tracking."""
        if not self.enabled:
            return None
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - any tracking failure must not stop the pipeline
            log.warning("MLflow tracking at %s failed (%s); %s", redact(self.uri), redact(str(err)), self.stopped)
            self.enabled = False
            return None


class Tracker(_Guarded):
    """Logs one pipeline run to MLflow through an explicit client (safe across threads).

    `tags` are added to (and override) the parent run's default tags (git commit and dirty flag, library
    versions); `started` (epoch seconds) back-dates the parent run, for a run re-logged after the fact; `params`
    are the parent run's params (None = the flat config `flatten(cfg)`; a re-logged run passes its record's
    config as stored, so fields added to the code since are not logged as if the run had them).
    A run of a sweep passes its setting's `label`, which leads the parent's and every nested run's name
    (:func:`labelled_run_name`), and `common_tags` / `common_params` (the sweep id and setting; each swept key as
    'sweep.<dotted key>'), set on the parent and on every nested stage run, so the stage runs of two settings can
    be told apart and filtered on.
    A stage run that starts computing gets its nested run then (:meth:`start_stage`: RUNNING, while its metric points
    arrive, :func:`live_metrics`), which its end fills in and ends (:meth:`log_stage`)."""

    def __init__(self, cfg: PipelineConfig, root: Path, run_name: str, tags: dict[str, str] | None = None,
                 started: float | None = None, params: dict[str, Any] | None = None, label: str | None = None,
                 common_tags: dict[str, str] | None = None, common_params: dict[str, str] | None = None) -> None:
        self.enabled = cfg.tracking.enabled
        self.cfg = cfg  # what its stage runs' params show (saerl.stages.ran_values)
        self.parent_id: str | None = None
        self.root = Path(root)
        self.uri = tracking_uri(cfg, root)
        self.artifact_location = artifact_location(cfg, root)
        self.stage_runs: dict[str, str] = {}
        self.live: dict[str, str] = {}  # stage run -> its nested run, made as it started computing, not yet ended
        self.label = label
        self.common_tags = dict(common_tags or {})
        self.common_params = dict(common_params or {})
        if not self.enabled:
            return
        http_settings(cfg)
        parent_params = (redacted(flatten(cfg)) if params is None else params) | self.common_params
        parent_tags = {RUN_ID_TAG: run_name, **(tags or {}), **self.common_tags}
        self._guard(lambda: self._start(cfg, labelled_run_name(run_name, label), parent_tags, started, parent_params))

    def _start(self, cfg: PipelineConfig, run_name: str, tags: dict[str, str], started: float | None,
               params: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        code = {} if GIT_COMMIT_TAG in tags else git_tags()  # the caller's (the run record's), else the checkout's
        all_tags = {**code, **library_tags(), **tags}
        start_ms = int(started * MS_PER_S) if started is not None else None
        # the first client call creates (migrates) a new SQLite store; the run is made under the lock too, so a `saerl
        # gc` forgetting runs there (under it) never drops the experiment between this run finding it and joining it
        with store_lock(self.uri):
            db = sqlite_file(self.uri)
            if db is not None and db.exists():  # a moved or copied store: every experiment, not only this run's
                repoint_store(db)
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment(cfg.tracking.experiment or cfg.name)
            run = self.client.create_run(self.experiment_id, start_time=start_ms, run_name=run_name, tags=all_tags)
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, params)
        try:  # its own failure must not turn this run's tracking off (its parent would stay RUNNING for ever)
            close_dead_runs(self.client, self.experiment_id, self.root)
        except Exception as err:  # noqa: BLE001 - closing other runs is housekeeping
            log.warning("MLflow: could not end the runs that killed saerl runs left RUNNING (%s)", err)

    def _experiment(self, name: str) -> str:
        """The id of the experiment `name`, created when missing, restored when deleted (`saerl gc
        --forget-runs-older-than-days` deletes an experiment it left without runs: a tracking server's stays marked
        deleted, and MLflow refuses new runs in it, which turned tracking off for every later run of that config).
        Runs started side by side (a sweep's children on Dask) may all find it missing: the one whose create loses
        reads the winner's, instead of failing and turning tracking off for its whole run. in: experiment name; out:
        experiment id."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage == DELETED_STAGE:
            self.client.restore_experiment(exp.experiment_id)
            log.info("MLflow: experiment %r was deleted (by `saerl gc` once its runs were forgotten, or by hand): "
                     "restored for this run", name)
        if exp is not None:
            old = exp.artifact_location  # one beside another store was repointed as the tracker started
            db = sqlite_file(self.uri)
            if self.artifact_location and db is not None and default_location(old, exp.experiment_id):
                set_experiment_location(db, exp.experiment_id, self.artifact_location)
                log.warning("MLflow: experiment %r kept its files in %s (MLflow's default: the working folder of what "
                            "created it, a saerl older than December 3 or another MLflow client), outside the artifact "
                            "root: its new runs' files go to %s; its earlier runs' files stay where they are", name,
                            old, self.artifact_location)
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self.artifact_location)
        except MlflowException:
            exp = self.client.get_experiment_by_name(name)  # created by a concurrent run since we looked
            if exp is None:
                raise
            return exp.experiment_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_text(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), BATCH_LIMIT):
            self.client.log_batch(run_id, params=items[i : i + BATCH_LIMIT])

    def _stage_tags(self, stage: str, key: str, status: str, reason: str, inputs: dict[str, str] | None,
                    tags: dict[str, str] | None) -> list[Any]:
        """A nested run's tags: its stage (STAGE_TAG) and stage run (STAGE_RUN_TAG), key, status and reason, each
        input as 'saerl.input.<name>' (:func:`input_tags`), `tags` as they are, the tracker's common tags. out:
        MLflow RunTags."""
        from mlflow.entities import RunTag

        return [RunTag(STAGE_TAG, stage_of(stage)), RunTag(STAGE_RUN_TAG, stage), RunTag("saerl.key", key),
                RunTag("saerl.status", status), RunTag("saerl.reason", reason[:PARAM_VALUE_LIMIT])] + [
            RunTag(k, v) for k, v in sorted({**input_tags(inputs or {}), **(tags or {}), **self.common_tags}.items())]

    def _new_stage_run(self, stage: str, start_ms: int, params: dict[str, Any], inputs: dict[str, str] | None,
                       upstream: dict[str, Any] | None) -> str:
        """Create a stage run's nested run (named after it, led by the sweep label) starting at `start_ms`, with its
        params (the config slice, `upstream`'s, the variant's, the common ones). out: its MLflow run id."""
        run = self.client.create_run(self.experiment_id, run_name=labelled_run_name(stage, self.label),
                                     start_time=start_ms, tags={PARENT_TAG: self.parent_id})
        rid = run.info.run_id
        self.stage_runs[stage] = rid
        self._log_params(rid, {**(upstream or {}), **params, **variant_params(inputs or {}), **self.common_params})
        return rid

    def start_stage(self, stage: str, key: str, params: dict[str, Any], inputs: dict[str, str] | None = None,
                    upstream: dict[str, Any] | None = None) -> str | None:
        """The nested run of a stage run that starts computing, made now and left RUNNING: its params and tags as
        :meth:`log_stage` gives them, status COMPUTING and no reason yet, and the parent's 'stage.<name>' tag
        'computing:<key>', so MLflow shows what is running and since when, and a training run's metric points can
        arrive while it trains (:func:`live_metrics`, given the id returned). :meth:`log_stage` fills it in and
        ends it. in: as log_stage; out: its MLflow run id, None with tracking off (or failed)."""

        def do() -> str:
            from mlflow.entities import RunTag

            rid = self._new_stage_run(stage, now_ms(), params, inputs, upstream)
            self.client.log_batch(rid, tags=self._stage_tags(stage, key, COMPUTING, "", inputs, None))
            self.client.log_batch(self.parent_id, tags=[RunTag(f"stage.{stage}", f"{COMPUTING}:{key}")])
            self.live[stage] = rid
            return rid

        return self._guard(do)

    def log_stage(self, stage: str, status: str, key: str, reason: str, seconds: float,
                  params: dict[str, Any], metrics: dict[str, float] | None = None,
                  inputs: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                  upstream: dict[str, Any] | None = None) -> None:
        """One nested run per stage, named after the stage run (led by the sweep setting's label: see
        :class:`Tracker`), spanning its wall time (`seconds`, back from now): its config slice as params, with the
        `upstream` stage runs' (saerl.runs.lineage_config: a training run also shows the curriculum settings it was
        trained on), the stage (STAGE_TAG) and stage run (STAGE_RUN_TAG), key/status/reason as tags, each of its `inputs`
        (StageRecord.inputs) as a tag 'saerl.input.<name>', `tags` as they are (the build machine), and a training
        run's arm and seed also as params 'arm' / 'seed' (:func:`variant_params`), the one thing that tells two
        training runs of a config apart; the tracker's common tags and params (a sweep child's) too. A stage run
        that has its nested run from its start (:meth:`start_stage`) gets it filled in and ended now instead: it
        starts when the stage run started, and keeps the params and metric points it has."""

        def do() -> None:
            from mlflow.entities import Metric, RunTag

            now = now_ms()  # the run spans the stage run's wall time: MLflow's duration, and no metric before it
            rid = self.live.get(stage) or self._new_stage_run(stage, now - int(seconds * MS_PER_S), params, inputs,
                                                              upstream)
            ms = [Metric("seconds", float(seconds), now, 0)] + [
                Metric(metric_key(WORK_SECONDS if k == "seconds" else k), float(v), now, 0)
                for k, v in (metrics or {}).items()]
            self.client.log_batch(rid, metrics=ms, tags=self._stage_tags(stage, key, status, reason, inputs, tags))
            self.client.log_batch(self.parent_id, tags=[RunTag(f"stage.{stage}", f"{status}:{key}")])
            self.client.set_terminated(rid, end_time=now)
            self.live.pop(stage, None)

        self._guard(do)

    def unlogged(self, points: list[tuple[int, dict[str, float]]],
                 stage: str) -> list[tuple[int, dict[str, float]]]:
        """`points` less each (metric, step) the stage run's nested run already holds: those sent while it ran
        (:func:`live_metrics`), so that logging its whole history at its end logs each step once. A resumed
        training run's steps before its checkpoint, or any a failed send missed, are still logged. One metric
        history read per metric name. in: (step, {name: value}) points, the stage run; out: the points left."""
        rid = self.stage_runs[stage]
        names = {metric_key(k) for _, values in points for k in values}
        have = {(name, m.step) for name in names for m in self.client.get_metric_history(rid, name)}
        out = [(step, {k: v for k, v in values.items() if (metric_key(k), step) not in have})
               for step, values in points]
        return [(step, values) for step, values in out if values]

    def log_text(self, text: str, name: str) -> None:
        """Attach `text` to the parent run as the file `name` (CONFIG_FILE: the run's config)."""
        self._guard(lambda: self.client.log_text(self.parent_id, text, name))

    def log_artifact(self, path: Path, stage: str | None = None, folder: str | None = None) -> None:
        """Attach a file to the stage's nested run (or the parent run), under `folder` in its artifacts."""
        self._guard(lambda: self.client.log_artifact(
            self.stage_runs.get(stage or "", self.parent_id), str(path), folder))

    def log_metrics(self, metrics: dict[str, float], step: int = 0, stage: str | None = None) -> None:
        """Log metrics at a step to the stage's nested run (or the parent run)."""

        def do() -> None:
            from mlflow.entities import Metric

            rid = self.stage_runs.get(stage or "", self.parent_id)
            now = now_ms()
            self.client.log_batch(rid, metrics=[Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()])

        self._guard(do)

    def log_history(self, points: list[tuple[int, dict[str, float]]], stage: str | None = None,
                    times: Mapping[int, int] | None = None) -> None:
        """Log many (step, {name: value}) points to the stage's nested run (or the parent), in batches, each at
        its step's time in `times` ({step: epoch ms}: :func:`step_end_times`), else at the time of logging."""

        def do() -> None:
            from mlflow.entities import Metric

            rid = self.stage_runs.get(stage or "", self.parent_id)
            now = now_ms()
            when = times or {}
            ms = [Metric(metric_key(k), float(v), when.get(step, now), step)
                  for step, values in points for k, v in values.items()]
            for i in range(0, len(ms), METRIC_BATCH_LIMIT):
                self.client.log_batch(rid, metrics=ms[i : i + METRIC_BATCH_LIMIT])

        self._guard(do)

    def _end_unfinished(self, rid: str, status: str) -> None:
        """End a nested run still computing with `status`, its saerl.status saying how (ENDED_STATUS)."""
        from mlflow.entities import RunTag

        self.client.log_batch(rid, tags=[RunTag("saerl.status", ENDED_STATUS.get(status, status.lower()))])
        self.client.set_terminated(rid, status=status)

    def finish(self, status: str = TRACKED_FINISHED, ended: str | None = None) -> None:
        """Close the parent run with `status` (FINISHED, FAILED or KILLED); `ended`, for a run that failed or was
        stopped, is where and why (the run record's 'failed' / 'stopped' text), set as the tag ENDED_TAG. A nested
        run still computing (:meth:`start_stage`: the stage runs under way when the run failed or was stopped) ends
        with the same status, its saerl.status 'failed' or 'stopped' (ENDED_STATUS). The store's connections are
        closed (:func:`release_store`) and MLflow's cached artifact repositories of its runs dropped
        (:func:`forget_artifact_repos`)."""
        for rid in list(self.live.values()):
            self._guard(lambda rid=rid: self._end_unfinished(rid, status))
        self.live.clear()
        if self.parent_id and ended:
            self._guard(lambda: self.client.set_tag(self.parent_id, ENDED_TAG, ended[:PARAM_VALUE_LIMIT]))
        if self.parent_id:
            self._guard(lambda: self.client.set_terminated(self.parent_id, status=status))
        if self.enabled:
            release_store(self.uri)  # the run's store is closed: a long-lived process keeps no file of it open
            forget_artifact_repos([self.parent_id, *self.stage_runs.values()])  # nor MLflow's objects of its runs


class LiveStageRun(_Guarded):
    """A computing stage run's metric points, sent to its nested MLflow run (:meth:`Tracker.start_stage`) as they are
    measured, from the process that runs the stage (the flow's, or a Dask worker's: it is given the run's id, and
    makes its own client from the config, :func:`tracking_uri`). Called as a saerl.rl step sink: (step, {name:
    value}), each call one MlflowClient.log_batch at the time of the call. A failure warns once and stops the live
    points of this stage run alone (the stage's end logs what is missing). in: config, artifact root, MLflow run id."""

    stopped = "no more live metric points for this stage run (its end logs the rest); the stage goes on"

    def __init__(self, cfg: PipelineConfig, root: Path, run_id: str) -> None:
        self.enabled = cfg.tracking.enabled
        self.cfg, self.run_id = cfg, run_id
        self.uri = tracking_uri(cfg, root)
        self.client: Any = None

    def _connect(self) -> Any:
        """The client, made at the first send (with the config's retries and timeout; a new SQLite store is not
        made here: the flow made it): the run must exist."""
        if self.client is None:
            from mlflow.tracking import MlflowClient

            http_settings(self.cfg)
            with store_lock(self.uri):
                client = MlflowClient(tracking_uri=self.uri)
                client.get_run(self.run_id)
            self.client = client
        return self.client

    def __call__(self, step: int, values: Mapping[str, float]) -> None:
        def do() -> None:
            from mlflow.entities import Metric

            client, now = self._connect(), now_ms()
            ms = [Metric(metric_key(k), float(v), now, step) for k, v in values.items()]
            for i in range(0, len(ms), METRIC_BATCH_LIMIT):
                client.log_batch(self.run_id, metrics=ms[i : i + METRIC_BATCH_LIMIT])

        self._guard(do)


@contextmanager
def live_metrics(cfg: PipelineConfig, root: str | Path, run_id: str | None) -> Iterator[None]:
    """For the block (a stage run computing, in whatever process runs it), send its metric points as they are
    measured to its nested MLflow run `run_id` (:class:`LiveStageRun` as saerl.rl's step sink: a training run's
    per-step metrics and in-training evaluations). No run id, or tracking off: nothing. in: config, artifact root,
    the nested run's id or None; out: a context."""
    if not run_id or not cfg.tracking.enabled:
        yield
        return
    from saerl.rl import step_sink

    sink = LiveStageRun(cfg, Path(root), run_id)
    try:
        with step_sink(sink):
            yield
    finally:
        if sink.client is not None:  # a Dask worker's process lives on after the stage: no file of the store kept
            release_store(sink.uri)


def step_points(steps_log: pl.DataFrame, curve: pl.DataFrame) -> list[tuple[int, dict[str, float]]]:
    """A training run's per-step metric points. in: trl's per-step log (polars frame with a `step` column and
    one numeric column per metric) and the greedy eval curve (step, set, greedy); out: [(step, {name: value})],
    the curve's points named 'eval/<set>/greedy'."""
    points = [(int(row["step"]), {k: v for k, v in row.items()
                                  if k != "step" and isinstance(v, int | float) and v is not None})
              for row in steps_log.iter_rows(named=True)] if "step" in steps_log.columns else []
    points += [(int(row["step"]), {f"eval/{row['set']}/greedy": row["greedy"]})
               for row in curve.iter_rows(named=True)]
    return points


def step_end_times(steps_log: pl.DataFrame, curve: pl.DataFrame, end: float | None) -> dict[int, int]:
    """When each step of a training run ended (epoch ms), for MLflow's wall-time axis: counted back from `end`,
    the time the run's artifact was published (its manifest's 'created', :func:`manifest_created`), over trl's
    per-step durations (`step_time` of log.parquet) and the held-out evaluations that followed a step (the curve's
    `seconds`, summed over its sets; the step-0 one came before the first step). Approximate: the seconds spent
    after the last step (saving the policy, the plots) are not known, so every point is that much early; a resumed
    run's steps before its checkpoint are placed as if the run had not stopped. in: the per-step log (step,
    step_time, ...), the curve (step, set, seconds, ...), the end in epoch seconds (None: not known); out: {step:
    epoch ms}, {} when the end is not known or the log holds no per-step durations (an older trl): the points are
    then logged at the time of logging."""
    import polars as pl

    if end is None or "step" not in steps_log.columns or STEP_TIME not in steps_log.columns:
        return {}
    durations = {int(s): float(d or 0.0) for s, d in steps_log.select("step", STEP_TIME).iter_rows()}
    evals: dict[int, float] = {}
    if EVAL_SECONDS in curve.columns and "step" in curve.columns:
        per_step = curve.group_by("step").agg(pl.col(EVAL_SECONDS).fill_null(0.0).sum())
        evals = {int(s): float(t) for s, t in per_step.iter_rows()}
    out, t = {}, end
    for step in sorted(set(durations) | set(evals), reverse=True):
        t -= evals.get(step, 0.0)  # the evaluation after this step ran from the step's end until t
        out[step] = int(t * MS_PER_S)
        t -= durations.get(step, 0.0)
    return out


def manifest_created(manifest: Mapping[str, Any]) -> float | None:
    """When the artifact of `manifest` was published: its 'created' ('2026-12-04T19:54:19Z', UTC) in epoch seconds,
    or None when missing or not in that form."""
    try:
        return datetime.strptime(str(manifest["created"]), CREATED_FORMAT).replace(tzinfo=UTC).timestamp()
    except (KeyError, ValueError):
        return None


def manifest_build(manifest: Mapping[str, Any]) -> tuple[float | None, dict[str, str]]:
    """What an artifact's manifest (:func:`read_manifest`) says of its build: the seconds it took (None when not
    recorded), where it was built, as tags 'saerl.machine.<field>' (cpu, torch_cpu, cuda: see
    saerl.artifacts.build_machine), and by what, as tags BUILD_TAG + 'created' (when it was published), the code that
    built it (:func:`code_tags` of its 'git': git_commit, git_dirty, and git_diff / git_dirty_files when dirty) and
    'hub_commit' (the hub commit of the model or SAE it loaded, where it loaded one); none of them for a manifest
    without them (older ones). (None, {}) for an empty manifest (unreadable)."""
    seconds, machine, code = manifest.get("seconds"), manifest.get("machine"), manifest.get("git")
    tags = {MACHINE_TAG + str(k): str(v)[:PARAM_VALUE_LIMIT] for k, v in machine.items()} \
        if isinstance(machine, dict) else {}
    tags |= code_tags(code, BUILD_TAG + "git_") if isinstance(code, dict) else {}
    tags |= {BUILD_TAG + k: str(manifest[k]) for k in ("created", HUB_COMMIT) if manifest.get(k)}
    return (float(seconds) if isinstance(seconds, int | float) else None), tags


SWEEP_RUN = "sweep {sweep_id}"  # the name (and saerl.run_id tag) of a sweep's own MLflow run (log_sweep; gc forgets it
# by it: saerl.gc.forget_runs)
SWEEP_RUN_LABEL = "sweep table"  # the saerl.setting tag of a sweep's own run, which holds its table across settings


def log_sweep(cfg: PipelineConfig, root: Path, sweep_id: str, grid: dict[str, list[Any]], files: list[Path]) -> None:
    """One MLflow run for a whole sweep, in its settings' experiment, named 'sweep <id>' and tagged like its children
    (saerl.sweep; saerl.setting SWEEP_RUN_LABEL): the grid as params ('grid.<dotted key>': the values) and the
    table across settings (sweep.parquet, sweep.txt) as artifacts, which no child's run holds (each compares the
    arms of its own setting). Tracking off: nothing. in: the sweep's base config, artifact root, sweep id, grid, the
    table files; out: none."""
    from saerl.sweep import sweep_tags

    tracker = Tracker(cfg, root, SWEEP_RUN.format(sweep_id=sweep_id), tags=sweep_tags(sweep_id, SWEEP_RUN_LABEL),
                      params={f"grid.{key}": values for key, values in grid.items()})
    for path in files:
        tracker.log_artifact(path)
    tracker.finish()


def log_stage_run(tracker: Tracker, stage: str, rec: StageRecord, metrics: dict[str, float] | None,
                  upstream: dict[str, Any] | None = None) -> None:
    """One nested MLflow run for a stage run: its config slice as params, as the run had the fields
    (saerl.stages.ran_values: the real data path, the resolved layer; its key holds their keyed form), a training
    run's arm and seed too, key/status/reason and its inputs as tags, what its artifact's manifest says of the build
    (:func:`manifest_build`: machine, code, time) as tags, its summary metrics, its plots and small tables (LOGGED_TABLES);
    for a training run also trl's per-step metrics and the greedy learning curve, at their steps and at the
    times they were measured (:func:`step_end_times`), less the points its nested run got while it trained
    (:func:`live_metrics`, :meth:`Tracker.unlogged`: each step once); for the evaluate stage each training run's curve on the
    reachable strata (:func:`log_reachable_curves`), which only it knows, on that training run's nested run.
    The summary metrics of a stage in PARENT_METRIC_STAGES (evaluate: the run's outcome, cached or computed)
    go on the parent run too, so MLflow's top-level table compares runs by them. in: the tracker, the stage
    (e.g. 'train'), the stage run's record (name, key, status, reason, config slice, inputs, seconds, artifact
    path), its metrics and the config fields of the stage runs upstream of it (saerl.runs.lineage_config)."""

    if not tracker.enabled:  # tracking off (or failed earlier): read no artifact for it
        return
    folder = Path(rec.path)
    manifest = read_manifest(folder)  # read once: the build's seconds and machine, and a training run's end
    built, build_tags = manifest_build(manifest)
    own = dict(metrics or {})
    metrics = {**own, **({BUILD_SECONDS: built} if built is not None else {})}
    live = rec.stage in tracker.live  # its nested run was made as it started: it holds the points sent meanwhile
    tracker.log_stage(rec.stage, rec.status, rec.key, rec.reason, rec.seconds, ran_values(tracker.cfg, rec.config),
                      metrics, rec.inputs, tags=build_tags, upstream=ran_values(tracker.cfg, upstream or {}))
    if stage in PARENT_METRIC_STAGES and own:
        tracker.log_metrics(own)
    for png in sorted(folder.glob("plots/*.png")):
        tracker.log_artifact(png, rec.stage, "plots")
    for table in LOGGED_TABLES.get(stage, ()):
        if (folder / table).exists():
            tracker.log_artifact(folder / table, rec.stage)
    # the histories read artifact files: an unreadable one leaves its history out (history_tables), never fails the
    # run nor turns tracking off, which only a failing tracking store does (_guard)
    if stage == "train" and (tables := history_tables(folder, ("log.parquet", "curve.parquet"), rec.stage)):
        steps_log, curve = tables

        def history() -> None:
            points = step_points(steps_log, curve)
            tracker.log_history(tracker.unlogged(points, rec.stage) if live else points, stage=rec.stage,
                                times=step_end_times(steps_log, curve, manifest_created(manifest)))

        tracker._guard(history)
    if stage == "evaluate" and (folder / CURVES).exists() and (tables := history_tables(folder, (CURVES,), rec.stage)):
        tracker._guard(lambda: log_reachable_curves(tracker, rec, tables[0]))


def history_tables(folder: Path, names: tuple[str, ...], stage_run: str) -> list[Any] | None:
    """The Parquet tables `names` of an artifact folder, or None with a warning when one cannot be read (gone:
    collected by `saerl gc` meanwhile; damaged): that stage run's history is then not logged, and tracking goes on.
    in: the folder, file names, the stage run's name (for the warning); out: the frames, in order, or None."""
    import polars as pl

    try:
        return [pl.read_parquet(folder / name, glob=False) for name in names]
    except (OSError, pl.exceptions.PolarsError) as err:
        log.warning("MLflow: %s of %s could not be read (%s): its history is not logged; tracking goes on",
                    " / ".join(names), stage_run, redact(str(err)))
        return None


def reachable_points(curves: pl.DataFrame) -> dict[tuple[str, int], list[tuple[int, dict[str, float]]]]:
    """Each training run's in-training greedy curve on the reachable strata (the '<set>:reachable' sets the evaluate
    stage adds to curves.parquet, saerl.runners.reachable_curve), as metric points named like the run's own curve
    ('eval/<set>:reachable/greedy', :func:`step_points`). in: the evaluate artifact's curves (step, set, greedy, arm,
    seed, ...); out: {(arm, seed): [(step, {name: value})]}, {} when it holds no reachable stratum."""
    import polars as pl

    from saerl.evaluate import REACHABLE

    if not {"step", "set", "greedy", "arm", "seed"} <= set(curves.columns):
        return {}
    out: dict[tuple[str, int], list[tuple[int, dict[str, float]]]] = {}
    rows = curves.filter(pl.col("set").str.ends_with(REACHABLE) & pl.col("greedy").is_not_null())
    for row in rows.sort("arm", "seed", "step", "set").iter_rows(named=True):
        out.setdefault((str(row["arm"]), int(row["seed"])), []).append(
            (int(row["step"]), {f"eval/{row['set']}/greedy": float(row["greedy"])}))
    return out


def train_times(folder: Path) -> dict[int, int]:
    """When each step of the training run whose artifact is in `folder` ended (:func:`step_end_times`), {} when the
    artifact or its times are not there. in: the train artifact's folder; out: {step: epoch ms}."""
    import polars as pl

    if not (folder / "log.parquet").exists() or not (folder / "curve.parquet").exists():
        return {}
    log, curve = (pl.read_parquet(folder / name, glob=False) for name in ("log.parquet", "curve.parquet"))
    return step_end_times(log, curve, manifest_created(read_manifest(folder)))


def log_reachable_curves(tracker: Tracker, rec: StageRecord, curves: pl.DataFrame) -> None:
    """Log the in-training curve of each training run on the reachable strata (:func:`reachable_points`), which only
    the evaluate stage knows (its base-policy probe defines them), as metric history on that training run's nested
    run beside its '<set>' curve, at the times its steps ended (:func:`train_times`, from its artifact: the evaluate
    record's input key under the same root). A training run this tracker has no nested run for (a relog whose train
    artifact was gone) gets its points on the evaluate run, named 'eval/<set>:reachable/<arm>/<seed>/greedy'.
    in: the tracker, the evaluate stage run's record (path, inputs), its curves.parquet frame."""
    root = Path(rec.path).parent.parent  # <root>/evaluate/<key> -> <root>
    for (arm, seed), points in reachable_points(curves).items():
        name = TRAIN_RUN.format(arm=arm, seed=seed)
        if name in tracker.stage_runs:
            key = rec.inputs.get(name, "")
            times = train_times(artifact_dir(root, name, key)) if key else {}
            tracker.log_history(points, stage=name, times=times)
            continue
        renamed = [(step, {k.removesuffix("/greedy") + f"/{arm}/{seed}/greedy": v for k, v in values.items()})
                   for step, values in points]
        tracker.log_history(renamed, stage=rec.stage)

"""What a run must not leak: tracking credentials out of the config a flow is given (Prefect keeps flow-run
parameters in clear), and telemetry off. Light to import: the command line calls it before anything heavy."""

from __future__ import annotations

import os
import sys
from urllib.parse import unquote, urlsplit, urlunsplit

from saerl.config import PipelineConfig, has_userinfo

MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")  # what MLflow's http client reads
TELEMETRY_OFF = {"HF_HUB_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}  # each library's own switch


RAW_DELIMITER_HELP = (
    "the tracking URI holds an '@' after its host (in its path, query or fragment): an HTTP client ends the host at the "
    "first '/', '?' or '#', so a password holding one of them, raw, is read as part of the host or path and would stay "
    "in the URI (kept in clear by Prefect and shown in MLflow's links) instead of being sent as credentials. "
    "Percent-encode the password's '/', '?', '#' and '@' (%2F, %3F, %23, %40: https://alice:p%2Fss@host:5000), "
    "and an '@' of the path or query as %40")


def credentials_to_env(uri: str | None) -> str | None:
    """An http(s) tracking URI without its user:password part, which goes to MLflow's own variables
    (MLFLOW_CREDENTIALS) in this process's environment, and so the workers it starts: in the URI it reached Prefect's flow-run
    parameters (the config, in clear in prefect.db) and the run and experiment links MLflow prints. Other URIs (a
    database's, whose driver reads its password from the URI alone; none) are returned as they are.
    An http(s) URI with an '@' after its host ('http://alice:p/ss@host', a password's raw '/', '?' or '#'; an '@'
    of a query value alone, '?owner=bob@corp.com', is no credential: :func:`saerl.config.has_userinfo`) is
    refused with a ValueError (RAW_DELIMITER_HELP, which does not repeat the URI): read as an HTTP client reads it,
    its credentials would stay in the URI silently (or half of them, with the wrong host), and reading it to its last
    '@' instead could take a path's or query's '@' ('?owner=bob@corp.com') for a password's and send the rest of
    the URI to another host as credentials. in: tracking.uri; out: the URI to use."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return uri
    if "@" in parts.path + parts.query + parts.fragment and "@" not in parts.netloc:
        if has_userinfo(parts.scheme, uri.split("//", 1)[1]):  # not a query value's '@' ('?owner=bob@corp.com')
            raise ValueError(RAW_DELIMITER_HELP)
        return uri
    if "@" in parts.path + parts.query + parts.fragment:
        raise ValueError(RAW_DELIMITER_HELP)
    if "@" not in parts.netloc:
        return uri
    user, colon, password = parts.netloc.rpartition("@")[0].partition(":")
    os.environ[MLFLOW_CREDENTIALS[0]] = unquote(user)
    if colon:
        os.environ[MLFLOW_CREDENTIALS[1]] = unquote(password)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def without_uri_credentials(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with tracking.uri's credentials moved to the environment (:func:`credentials_to_env`), before it becomes
    a flow's parameters; as it is with runtime.dask_address, whose workers were started before (a sweep's children
    track from them) and would not see this process's environment. in/out: a config (the same object when there
    were none, or it keeps them)."""
    if cfg.runtime.dask_address:
        return cfg
    uri = credentials_to_env(cfg.tracking.uri)
    if uri == cfg.tracking.uri:
        return cfg
    return cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": uri})})


def telemetry_off() -> None:
    """Turn off the telemetry of Hugging Face's hub client (trl's trainers send it) and MLflow, unless the environment
    says otherwise (each library's own variable; DO_NOT_TRACK is left to the user): huggingface_hub reads its setting
    once, at import, which a hub model's up-front check made before the local server's environment was set (its
    setting is then written into the imported module too)."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None and os.environ["HF_HUB_DISABLE_TELEMETRY"] not in ("0", "false", "False"):
        hub.HF_HUB_DISABLE_TELEMETRY = True

"""What a run must not leak: credentials a URL carries masked in what a run shows, logs and records (:func:`redact`),
tracking credentials out of the config a flow is given (Prefect keeps flow-run parameters in clear), and telemetry
off. Light to import: the command line calls it before anything heavy."""

from __future__ import annotations

import os
import re
import sys
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from saerl.config import PipelineConfig

MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")  # what MLflow's http client reads
TELEMETRY_OFF = {"HF_HUB_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}  # each library's own switch


RAW_DELIMITER_HELP = (
    "the tracking URI holds an '@' after its host (in its path, query or fragment): an HTTP client ends the host at the "
    "first '/', '?' or '#', so a password holding one of them, raw, is read as part of the host or path and would stay "
    "in the URI (kept in clear by Prefect and shown in MLflow's links) instead of being sent as credentials. "
    "Percent-encode the password's '/', '?', '#' and '@' (%2F, %3F, %23, %40: https://alice:p%2Fss@host:5000), "
    "and an '@' of the path or query as %40")


# a URL's user:password part, and query parameters named like a secret (token, key, password, an Azure SAS's sig,
# ...): what a run's params, record and warnings must not show (tracking.uri, runtime.prefect_api_url,
# runtime.dask_address). An HTTP client (urllib3, httpx) ends a URL's authority at its first '/', '?' or '#' (RFC
# 3986), so an http(s) URL whose authority is a plain host[:port] and whose every later '@' sits in a query value
# ('http://h:5000/x?owner=bob@corp.com') has no user:password and is shown whole. Anywhere else the user:password
# part runs to the URL's last '@': a password may hold '/', '#', '?' or '@' (SQLAlchemy reads
# 'postgresql://bob:pa/ss@db/x' whole; 'http://bob:2024/Secret@h' is a password starting with digits, not port
# 2024 and a path), and masking a path's '@' too is the safe error
URL_START = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://")  # a URL's scheme and '//'
URL_REST = re.compile(r"\S*")  # a URL's text after '//': up to the next whitespace
URL_DELIMITERS = re.compile(r"[/?#]")  # what ends a URL's authority (RFC 3986)
PLAIN_AUTHORITY = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(?::[0-9]*)?")  # host[:port]
AUTHORITY_SCHEMES = ("http", "https")  # whose clients read the authority as RFC 3986 does
SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:token|key|secret|passw|auth|sig)[^=&#]*=)[^&#]*", re.IGNORECASE)
REDACTED = "***"


def has_userinfo(scheme: str, rest: str) -> bool:
    """Does a URL carry a user:password part (URL_START's comment says how it is read)? in: its scheme, and its text
    after '//' up to the next whitespace, holding an '@'; out: the verdict."""
    authority = URL_DELIMITERS.split(rest, maxsplit=1)[0]
    if "@" in authority or not (scheme.lower() in AUTHORITY_SCHEMES and PLAIN_AUTHORITY.fullmatch(authority)):
        return True
    before_fragment, _, fragment = rest[len(authority):].partition("#")
    path, _, query = before_fragment.partition("?")
    return "@" in path + fragment or any("@" in p.partition("=")[0] for p in query.split("&"))


def mask_userinfo(text: str) -> str:
    """`text` with every URL's user:password part (:func:`has_userinfo`) masked, up to the URL's last '@'; a URL
    inside another's path or query ('http://h/?next=http://u:p@h2') is read on its own. in/out: text."""
    out: list[str] = []
    pos = 0
    for m in URL_START.finditer(text):
        if m.start() < pos:  # inside a part masked already
            continue
        rest = URL_REST.match(text, m.end())[0]
        at = rest.rfind("@")
        if at >= 0 and has_userinfo(m[1], rest):
            out += [text[pos:m.end()], REDACTED]
            pos = m.end() + at
    return "".join(out) + text[pos:]


def redact(value: Any) -> Any:
    """`value` with the credentials a URL may carry masked ('https://alice:pw@host/api?token=x' ->
    'https://***@host/api?token=***'); anything else as it is. in: a value; out: the value to show or log."""
    if not isinstance(value, str) or "://" not in value:
        return value
    return SECRET_QUERY.sub(rf"\g<1>{REDACTED}", mask_userinfo(value))


def redacted(flat: dict[str, Any]) -> dict[str, Any]:
    """A flat config (:func:`saerl.config.flatten`) as MLflow params and run records keep it: URL credentials masked
    (:func:`redact`); the run itself uses the real values. in/out: {dotted path: value}."""
    return {k: redact(v) for k, v in flat.items()}


def credentials_to_env(uri: str | None) -> str | None:
    """An http(s) tracking URI without its user:password part, which goes to MLflow's own variables
    (MLFLOW_CREDENTIALS) in this process's environment, and so the workers it starts: in the URI it reached Prefect's flow-run
    parameters (the config, in clear in prefect.db) and the run and experiment links MLflow prints. Other URIs (a
    database's, whose driver reads its password from the URI alone; none) are returned as they are.
    An http(s) URI with an '@' after its host ('http://alice:p/ss@host', a password's raw '/', '?' or '#'; an '@'
    of a query value alone, '?owner=bob@corp.com', is no credential: :func:`has_userinfo`) is
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

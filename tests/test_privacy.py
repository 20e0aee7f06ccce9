"""saerl.privacy: tracking credentials out of flow parameters, telemetry off."""

from __future__ import annotations

import os
import sys

import pytest

from saerl.config import load_config
from saerl.privacy import (
    MLFLOW_CREDENTIALS,
    TELEMETRY_OFF,
    credentials_to_env,
    redact,
    telemetry_off,
    without_uri_credentials,
)


@pytest.fixture
def clean_env(monkeypatch):
    """No MLflow credentials or telemetry settings from the developer's shell, and none left to later tests (set
    first, so that monkeypatch restores each as it was, absent included)."""
    for name in (*MLFLOW_CREDENTIALS, *TELEMETRY_OFF):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_an_http_uris_credentials_move_to_mlflows_variables(clean_env):
    """Percent-escapes decoded, the host, port and path kept; a user alone sets no password; a database URI (whose
    driver reads its password from the URI alone), a URI without credentials and none are left as they are."""
    assert credentials_to_env("https://alice:p%40s%2Fs@mlflow.example:5000/api") == "https://mlflow.example:5000/api"
    assert [os.environ[n] for n in MLFLOW_CREDENTIALS] == ["alice", "p@s/s"]
    os.environ.pop(MLFLOW_CREDENTIALS[1])
    assert credentials_to_env("http://bob@host") == "http://host" and MLFLOW_CREDENTIALS[1] not in os.environ
    for uri in ("postgresql://a:b@db/mlflow", "http://host:5000", "sqlite:///x.db", None, ""):
        assert credentials_to_env(uri) == uri


def test_an_http_uri_with_an_at_sign_after_its_host_is_refused(clean_env):
    """A password holding a raw '/', '?' or '#' ended the host there: 'http://alice:p/ss@host/api' came back as it
    was, its credentials in the URI (Prefect keeps it in clear), and 'http://alice:p@s/s@host/api' as
    'http://s/s@host/api' (the wrong host, half the password left). Now it is refused, asking for percent-encoding,
    without repeating the URI, and nothing is moved to the environment; an encoded one moves whole."""
    for uri in ("http://alice:p/PW@host/api", "http://alice:p@PW/s@host/api", "https://a:p?PW@host", "http://a:p#PW@h",
                "http://bob:2024/PW@host"):
        with pytest.raises(ValueError, match="Percent-encode") as err:
            credentials_to_env(uri)
        assert "PW" not in str(err.value) and not any(n in os.environ for n in MLFLOW_CREDENTIALS)
    # a query value's '@' is no credential: the URI is used as it is
    assert credentials_to_env("http://host:5000/x?owner=bob@corp.com") == "http://host:5000/x?owner=bob@corp.com"
    assert not any(n in os.environ for n in MLFLOW_CREDENTIALS)
    secret = load_config(None, ["tracking.uri=http://alice:p/ss@127.0.0.1:5000"])
    with pytest.raises(ValueError, match="%2F"):
        without_uri_credentials(secret)
    assert credentials_to_env("http://alice:p%2Fss@host/api") == "http://host/api" and os.environ[MLFLOW_CREDENTIALS[1]] == "p/ss"


def test_a_config_without_uri_credentials_is_the_same_object_else_a_copy(clean_env):
    cfg = load_config(None, ["tracking.uri=http://127.0.0.1:5000"])
    assert without_uri_credentials(cfg) is cfg
    secret = load_config(None, ["tracking.uri=http://alice:pw@127.0.0.1:5000"])
    bare = without_uri_credentials(secret)
    assert bare.tracking.uri == "http://127.0.0.1:5000" and secret.tracking.uri.endswith("pw@127.0.0.1:5000")
    assert bare.model_dump()["train"] == secret.model_dump()["train"]


def test_telemetry_goes_off_unless_the_environment_says_otherwise(clean_env, monkeypatch):
    """huggingface_hub reads HF_HUB_DISABLE_TELEMETRY once, at import: an imported module's setting is written too."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_DISABLE_TELEMETRY", False)
    telemetry_off()
    assert all(os.environ[n] == v for n, v in TELEMETRY_OFF.items()) and hub.HF_HUB_DISABLE_TELEMETRY is True
    monkeypatch.setattr(hub, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "0")  # the user's choice stands
    telemetry_off()
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "0" and hub.HF_HUB_DISABLE_TELEMETRY is False
    assert "huggingface_hub.constants" in sys.modules


def test_an_existing_dask_cluster_keeps_the_uris_credentials(clean_env):
    """A sweep's children on runtime.dask_address track from workers started before this process moved the
    credentials to its environment: they would have lost them (a review found it). Such a config keeps its URI."""
    cfg = load_config(None, ["tracking.uri=http://alice:pw@127.0.0.1:5000", "runtime.dask_address=tcp://10.0.0.2:8786"])
    assert without_uri_credentials(cfg) is cfg and MLFLOW_CREDENTIALS[0] not in os.environ


def test_redact_masks_a_user_password_part_alone_not_an_at_sign_after_an_http_host():
    """'http://host:5000/path?owner=bob@corp.com' was shown as 'http://***@corp.com': an '@' anywhere in a URL was
    read as the end of a user:password part. An http(s) URL whose authority (up to the first '/', '?' or '#') is a
    plain host[:port] and whose every later '@' sits in a query value has none; a real one is still masked, one with a
    raw '/', '#', '?' or '@' in its password (a database URL, which SQLAlchemy reads to the '@'; a password starting
    with digits, which reads as a port) to the last '@', as are secret query values and a URL inside another's
    query. An '@' in an http path is masked too: the safe error."""
    for url in ("http://host:5000/path?owner=bob@corp.com", "http://127.0.0.1:4200/api"):
        assert redact(url) == url, url
    for url, shown in (("http://bob:2024/Secret@mlflow:5000", "http://***@mlflow:5000"), ("http://bob:/x@h", "http://***@h"),
                       ("http://a:99#Pw@h", "http://***@h"), ("http://[::1]:5000/a@b", "http://***@b")):
        assert redact(url) == shown, url  # shown whole by a rule that read 'bob:2024' as a host and a port
    for url, shown in (("https://alice:pw@host:5000/api?token=x", "https://***@host:5000/api?token=***"),
                       ("http://host:5000/x?owner=bob@corp.com&sig=S", "http://host:5000/x?owner=bob@corp.com&sig=***"),
                       ("postgresql://bob:pa/ss@db/mlflow", "postgresql://***@db/mlflow"),
                       ("http://alice:p@ss@host/api", "http://***@host/api"), ("http://a:p#s?s@h/x", "http://***@h/x"),
                       ("http://a:p/ss@h:5000/x", "http://***@h:5000/x"),
                       ("http://h/?next=http://u:p@h2/x", "http://h/?next=http://***@h2/x"),
                       ("tls://user:DASK_PW@sched:8786", "tls://***@sched:8786"),
                       ("see http://a:b@h1/x and http://c:d@h2/y", "see http://***@h1/x and http://***@h2/y")):
        assert redact(url) == shown, url

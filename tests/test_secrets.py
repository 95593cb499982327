"""Credentials never reach a config, a saved file or an error message (geoxai.secrets)."""

from __future__ import annotations

import json

import pytest

from geoxai.config import load_run_config
from geoxai.errors import ConfigError
from geoxai.secrets import SecretInConfigError, is_secret_name, scrub, secret_paths


def _doc(storage_options):
    return {
        "name": "t",
        "aoi": "4.0,50.0,4.1,50.1",
        "year": 2024,
        "stac": {"url": "http://127.0.0.5:1/"},
        "store": {"root": "s3://bucket/runs", "storage_options": storage_options},
        "models": {"prediction": "bundle"},
    }


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"client_kwargs": {"aws_secret_access_key": "S"}}, "client_kwargs.aws_secret_access_key"),
        ({"key": "AKIA"}, "key"),
        ({"a": [{"b": {"session_token": "T"}}]}, "a[0].b.session_token"),
        ({"config_kwargs": {"proxies": {"password": "p"}}}, "config_kwargs.proxies.password"),
    ],
)
def test_credentials_at_any_depth_are_refused_naming_the_key(options, path):
    with pytest.raises(SecretInConfigError) as err:
        load_run_config(_doc(options))
    assert isinstance(err.value, ConfigError) and isinstance(err.value, ValueError)
    assert f"store.storage_options.{path}" in str(err.value)
    assert "AWS_SECRET_ACCESS_KEY" in str(err.value)  # the fix
    for value in ("S", "AKIA", "T", "p"):  # the value itself is never echoed
        assert f"'{value}'" not in str(err.value)


def test_harmless_options_pass():
    options = {
        "endpoint_url": "http://127.0.0.4:9000",
        "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"signature_version": "s3v4", "s3": {"addressing_style": "path"}},
        "use_listings_cache": False,
    }
    cfg = load_run_config(_doc(options))
    assert cfg.store.storage_options == options
    assert secret_paths(options) == []


def test_scrub_replaces_every_secret_value_at_any_depth_and_copies():
    doc = {"a": {"client_kwargs": {"aws_secret_access_key": "S", "region_name": "r"}}, "x": [1]}
    out = scrub(doc)
    assert out == {
        "a": {"client_kwargs": {"aws_secret_access_key": "***", "region_name": "r"}},
        "x": [1],
    }
    assert doc["a"]["client_kwargs"]["aws_secret_access_key"] == "S"
    assert is_secret_name("AWS_ACCESS_KEY_ID") and is_secret_name("GDAL_HTTP_USERPWD")
    assert not is_secret_name("AWS_ENDPOINT_URL") and not is_secret_name("AWS_REGION")


def test_saved_config_and_store_errors_hold_no_secret(tmp_path, monkeypatch):
    from geoxai.io.config_file import save_config
    from geoxai.io.layout import RunLayout
    from geoxai.io.location import _redact, resolve

    doc = _doc({"client_kwargs": {"aws_secret_access_key": "gx-nested-secret"}})
    layout = RunLayout(str(tmp_path / "run"))
    save_config(doc, layout.loc("config.json"))  # a dict that never went through validation
    text = (tmp_path / "run" / "config.json").read_text()
    assert "gx-nested-secret" not in text
    assert json.loads(text)["store"]["storage_options"]["client_kwargs"] == {
        "aws_secret_access_key": "***"
    }
    loc = resolve("s3://b/p", {"client_kwargs": {"aws_secret_access_key": "gx-nested-secret"}})
    assert "gx-nested-secret" not in _redact("denied for gx-nested-secret", loc)


def test_runtime_env_forwards_no_secret(monkeypatch):
    from pipelines.run import _forwarded_env

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAGXTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gx-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "gx-token")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.4:1")
    monkeypatch.setenv("GDAL_HTTP_USERPWD", "u:p")
    env = _forwarded_env()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.4:1"
    assert not {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GDAL_HTTP_USERPWD",
    } & set(env)

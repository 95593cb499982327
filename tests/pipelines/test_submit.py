"""``geoxai submit``'s job spec: what travels to the cluster (no Ray needed)."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.submit import job_spec


def _config(tmp_path):
    path = tmp_path / "run.yaml"
    doc = {
        "name": "t",
        "year": 2023,
        "aoi": "5.0,50.0,5.05,50.05",
        "stac": {"url": "http://127.0.0.1:9/stac"},
        "store": {"root": "s3://bucket/geoxai"},
        "models": {"prediction": "s3://bucket/models/treecover"},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_job_spec_never_carries_credentials(tmp_path, monkeypatch):
    secret = "geoxai-test-secret-5c0f7d1e"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "geoxai-test-key-id-91b2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "geoxai-test-token-77aa")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    spec, cfg = job_spec(_config(tmp_path), "http://10.0.0.1:8265")
    env = spec["runtime_env"]["env_vars"]
    assert env == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}  # where, never who
    text = json.dumps(spec) + json.dumps(cfg.model_dump(mode="json"))
    for value in ("geoxai-test-key-id-91b2", secret, "geoxai-test-token-77aa"):
        assert value not in text


def test_submit_has_no_option_to_forward_credentials(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "submit",
            str(_config(tmp_path)),
            "--address",
            "http://10.0.0.1:8265",
            "--forward-credentials",
        ],
    )
    assert result.exit_code != 0 and "No such option" in result.output

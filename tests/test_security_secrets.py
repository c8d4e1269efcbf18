"""Secrets stay out of everything the config is turned into: a password in the tracking URI and a token are
redacted in params, config.yaml and what the driver sends to Ray workers, and come back on a worker only from its
own environment. A password in any other URL is refused. (The whole job, scanned: test_deploy_s3_checkpoints.)"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from reid3dsl.config import ConfigError, from_redacted, load_config
from reid3dsl.train.driver import loop_config

PASSWORD, TOKEN, KEY = "uri-Pass/word+0001", "cfg-token-0002", "checkpoint-key-0003"


def test_a_password_in_the_tracking_uri_a_token_and_the_checkpoint_key_reach_no_dump_and_no_worker_config() -> None:
    uri = f"https://alice:{PASSWORD.replace('/', '%2F')}@mlflow.example:5000/x"  # the URL-quoted password
    cfg = load_config("configs/smoke.yaml", [f"tracking.uri={uri}"],
                      env={"MLFLOW_TRACKING_TOKEN": TOKEN, "REID3DSL_CHECKPOINT_KEY": KEY})
    assert cfg.tracking.uri == "https://mlflow.example:5000/x" and cfg.tracking.username == "alice"
    assert cfg.tracking.password.get_secret_value() == PASSWORD and cfg.tracking.token.get_secret_value() == TOKEN
    assert cfg.cluster.checkpoint_key.get_secret_value() == KEY

    sent = loop_config(cfg, "run-1")
    dumps = [cfg.to_yaml(), repr(cfg.flat()), repr(cfg.to_dict()), repr(cfg), pickle.dumps(sent).decode("latin1")]
    assert not [d for d in dumps for s in (PASSWORD, TOKEN, KEY) if s in d]
    assert cfg.flat()["tracking.password"] == cfg.flat()["tracking.token"] == cfg.flat()["cluster.checkpoint_key"] \
        == "***"

    # a worker: its own environment gives the secrets back, nothing else does
    worker = from_redacted(sent["config"], env={"MLFLOW_TRACKING_PASSWORD": "worker-pw",
                                                "REID3DSL_CHECKPOINT_KEY": "worker-key"})
    assert worker.tracking.password.get_secret_value() == "worker-pw" and worker.tracking.token is None
    assert worker.cluster.checkpoint_key.get_secret_value() == "worker-key"
    assert worker.tracking.uri == cfg.tracking.uri and worker.tracking.username == "alice"


@pytest.mark.parametrize("override", ["storage.endpoint=http://key:secret@127.0.0.1:9000",
                                      "cluster.storage_path=s3://key:secret@bucket/ckpt"])
def test_a_password_in_another_url_is_refused_in_one_line_naming_the_key(override: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, [override], env={})
    message = str(refused.value)
    assert override.split("=")[0] in message and "password" in message and "secret" not in message


def test_mlflow_params_and_config_artifact_of_a_run_hold_no_secret(tmp_path: Path) -> None:
    import mlflow

    from reid3dsl.train import tracking

    db = tmp_path / "mlflow.db"
    env = {"MLFLOW_TRACKING_TOKEN": TOKEN, "MLFLOW_TRACKING_PASSWORD": PASSWORD, "MLFLOW_TRACKING_USERNAME": "al"}
    with pytest.MonkeyPatch.context() as mp:
        for name in env:  # export_credentials writes them: setenv records each, so the context's end restores it
            mp.setenv(name, "")
        cfg = load_config("configs/smoke.yaml", [f"tracking.uri=sqlite:///{db}"], env=env)
        run_id, _ = tracking.start_run(cfg, resume=False)
        tracking.end_run(cfg, run_id)
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    run = client.get_run(run_id)
    assert run.data.params["tracking.password"] == "***" and run.data.params["tracking.username"] == "al"
    artifacts = Path(client.download_artifacts(run_id, "", str(tmp_path / "dl")))
    files = [db, *(p for p in artifacts.rglob("*") if p.is_file())]
    assert any(p.name == "config.yaml" for p in files)
    assert not [p for p in files for s in (PASSWORD, TOKEN) if s.encode() in p.read_bytes()]

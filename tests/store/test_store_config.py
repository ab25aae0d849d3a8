"""The object store client's configuration (pure: no server)."""

from __future__ import annotations

import base64

import pytest

from tokenfleet.store import StoreConfig, StoreCredentials, parse_s3_uri


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_config_from_secret_data_and_uri() -> None:
    data = {"accessKeyId": b64("AK"), "secretAccessKey": b64("SK")}
    config = StoreConfig.from_secret_data({**data, "endpoint": b64("http://127.0.0.1:1")})
    assert config.endpoint_url == "http://127.0.0.1:1"
    assert config.credentials == StoreCredentials("AK", "SK")
    assert "SK" not in repr(config.credentials)
    with pytest.raises(ValueError, match="secretAccessKey"):
        StoreConfig.from_secret_data({"accessKeyId": b64("AK")})
    with pytest.raises(ValueError, match="TOKENFLEET_S3_ENDPOINT must be an http"):
        StoreConfig.from_env({"TOKENFLEET_S3_ENDPOINT": "ftp://x"})
    assert parse_s3_uri("s3://models/qwen/7b/") == ("models", "qwen/7b")
    assert parse_s3_uri("s3://models") == ("models", "")
    with pytest.raises(ValueError, match="not an s3"):
        parse_s3_uri("gs://models/x")


def test_env_and_secret_key_aliases() -> None:
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "TOKENFLEET_S3_REGION": "eu"}
    config = StoreConfig.from_env(env)
    assert config.credentials == StoreCredentials("a", "s")
    assert config.region == "eu" and config.endpoint_url is None
    assert StoreConfig.from_env({}).credentials is None
    with pytest.raises(ValueError, match=r"data\.accessKeyId is not base64"):
        StoreConfig.from_secret_data({"accessKeyId": "%%%"})
    override = StoreConfig.from_secret_data(
        {"AWS_ACCESS_KEY_ID": b64("a"), "AWS_SECRET_ACCESS_KEY": b64("s")},
        endpoint_url="http://127.0.0.1:9",
    )
    assert override.endpoint_url == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="bucket name"):
        parse_s3_uri("s3:///x")

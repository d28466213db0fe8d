"""share_endpoint_cache: S3 object calls reuse botocore's endpoint resolution."""

from __future__ import annotations

from typing import Any

import aioboto3
import boto3
import pytest
from botocore.awsrequest import AWSResponse

from replaywatch.store.artifacts import object_key, share_endpoint_cache

ENDPOINT = "http://127.0.0.1:9"


def _client() -> Any:
    return boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )


def _count_rule_evaluations(client: Any) -> list[int]:
    ruleset = client._ruleset_resolver._provider.ruleset
    calls = [0]
    original = ruleset.evaluate

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    ruleset.evaluate = counting
    return calls


class _Raw:
    def stream(self, **_: Any) -> Any:
        yield b""


def _put_keys(client: Any, keys: list[str]) -> list[str]:
    """PUT each key without a network: a before-send handler answers 200 and keeps the
    URL the request was signed for."""
    urls: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        urls.append(request.url)
        return AWSResponse(request.url, 200, {}, _Raw())

    client.meta.events.register("before-send.s3.PutObject", answer)
    for key in keys:
        client.put_object(Bucket="diffs", Key=key, Body=b"{}")
    return urls


KEYS = [object_key(f"{i:02x}" * 32) for i in range(5)]


def test_without_the_fix_every_new_key_evaluates_the_rules() -> None:
    client = _client()
    calls = _count_rule_evaluations(client)
    _put_keys(client, KEYS)
    assert calls[0] == len(KEYS)  # botocore as shipped: the cache misses; if this fails, upstream fixed it


def test_with_the_fix_the_rules_are_evaluated_once_and_endpoints_are_unchanged() -> None:
    plain = _put_keys(_client(), KEYS)
    client = _client()
    assert share_endpoint_cache(client) == {"Key", "Prefix", "CopySource"}
    calls = _count_rule_evaluations(client)
    fixed = _put_keys(client, KEYS)
    assert calls[0] == 1
    assert fixed == plain == [f"{ENDPOINT}/diffs/{k}" for k in KEYS]


@pytest.mark.asyncio
async def test_the_aiobotocore_client_drops_the_unread_parameters() -> None:
    session = aioboto3.Session()
    async with session.client(
        "s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    ) as client:
        share_endpoint_cache(client)
        model = client.meta.service_model.operation_model("PutObject")
        params = await client._ruleset_resolver._get_provider_params(model, {"Bucket": "diffs", "Key": KEYS[0]}, {})
        assert "Key" not in params and params["Bucket"] == "diffs" and params["Endpoint"] == ENDPOINT

"""Diff objects in S3 (aioboto3), content-addressed by sha256.

Key ``sha256/<2 hex>/<2 hex>/<full hex>``, content type application/json, metadata
kind, run-id and step-id (dashes: underscores in header names are dropped by many
proxies and folded by WSGI servers). Putting a sha that already exists is a no-op (a conditional
put), so a retried batch writes nothing twice. At most ``concurrency`` puts are in
flight at once.

botocore's errors are translated here (``translate_s3_errors``): 403 and a missing
bucket are ``ServiceRefused`` (the process stops: retrying cannot mend them); another
4xx refuses this one object (``RecordRejected``: the record is dead-lettered); 5xx,
408, 429 and connection trouble are ``TransientError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import aioboto3
import botocore
import botocore.loaders
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from replaywatch import __version__, telemetry
from replaywatch.compare import Diff
from replaywatch.exceptions import ConfigError, NotFound, RecordRejected, ServiceRefused, TransientError

logger = logging.getLogger(__name__)


def object_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def ascii_metadata(value: str) -> str:
    """S3 metadata is US-ASCII and 2 KB in all: ids are percent-encoded and cut."""
    return quote(value, safe="-_.:/@ ")[:600]


def object_metadata(diff: Diff, run_id: str, step_id: str) -> dict[str, str]:
    """A diff object's user metadata (``x-amz-meta-*``): its kind and the step it is of."""
    return {"kind": diff.kind.value, "run-id": ascii_metadata(run_id), "step-id": ascii_metadata(step_id)}


def _unreferenced_endpoint_params(service: str) -> frozenset[str]:
    """The parameters a service's endpoint rule set declares but no rule reads."""
    ruleset = botocore.loaders.create_loader().load_service_model(service, "endpoint-rule-set-1")
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("ref"), str):
                used.add(node["ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            used.update(re.findall(r"\{([A-Za-z0-9_]+)", node))  # "{Bucket}" in URL templates

    walk(ruleset["rules"])
    return frozenset(set(ruleset["parameters"]) - used)


def share_endpoint_cache(client: Any) -> frozenset[str]:
    """Let botocore's endpoint cache serve every object of a bucket.

    botocore passes ``Key`` (and ``Prefix``, ``CopySource``) to S3's endpoint rules,
    which never read them, so its endpoint cache misses on every new key and each
    PUT re-evaluates the whole rule set: ~2 ms of CPU per request, measured here.
    botocore fixed this upstream (boto/botocore#3692) in a release aiobotocore does not
    pin yet; this is the same fix, computed from the rule set itself, so a parameter
    the rules start to read is passed again. Works on aiobotocore and botocore
    clients. Returns the parameters dropped.
    """
    resolver = getattr(client, "_ruleset_resolver", None)
    original = getattr(resolver, "_get_provider_params", None)
    if resolver is None or original is None:
        return frozenset()
    unused = _unreferenced_endpoint_params(client.meta.service_model.service_name)
    if not unused:
        return unused

    def drop(params: Any) -> Any:
        for name in unused:
            params.pop(name, None)
        return params

    async def async_params(*args: Any, **kwargs: Any) -> Any:  # aiobotocore
        return drop(await original(*args, **kwargs))

    def sync_params(*args: Any, **kwargs: Any) -> Any:  # botocore
        return drop(original(*args, **kwargs))

    resolver._get_provider_params = async_params if inspect.iscoroutinefunction(original) else sync_params
    return unused


TRANSIENT_CODES: Final = frozenset({
    "RequestTimeout", "RequestTimeTooSkewed", "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired",
    "RequestExpired", "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "InternalError",
    "ServiceUnavailable", "OperationAborted",
})  # fmt: skip
"""S3 error codes that pass, whatever their status: S3 answers several with a 400 (an
idle upload timed out, a session token expired before its refresh, a clock skew)."""


def transient_code(code: str) -> bool:
    """Whether an S3 error code says to retry (``TRANSIENT_CODES``)."""
    return code in TRANSIENT_CODES


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _already_stored(exc: ClientError) -> bool:
    """The conditional put lost: the key exists (412), or a concurrent put of it is in
    progress (409); either way the content, named by its sha256, is the same."""
    return _status(exc) == 412 or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")


@contextlib.asynccontextmanager
async def translate_s3_errors(what: str, bucket: str) -> AsyncIterator[None]:
    try:
        yield
    except ClientError as exc:
        status, code = _status(exc), _code(exc)
        if status in (401, 403) or code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId"):
            raise ServiceRefused(
                f"S3 refused {what} in bucket {bucket!r}: {code or status}; check that the bucket exists and that "
                "the credentials may write to it"
            ) from exc
        if 400 <= status < 500 and status not in (408, 429) and not transient_code(code):
            raise RecordRejected(f"S3 refused {what}: {code or status}: {exc}") from exc
        raise TransientError(f"S3 failed during {what}: {code or status}: {exc}") from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ServiceRefused(f"S3 credentials are missing for {what}: {exc}; set them or the AWS chain") from exc
    except (BotoCoreError, OSError) as exc:
        raise TransientError(f"S3 unreachable during {what}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class S3Target:
    """The bucket of the diffs and how to reach it: what both S3 clients (aioboto3 here,
    obstore in ``obstore_artifacts.py``) are opened with. Without keys, the AWS chain
    (environment, web identity, instance metadata) is used."""

    bucket: str
    endpoint: str | None
    region: str
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    addressing_style: str = "auto"
    """``auto``, ``path`` or ``virtual``: botocore's ``s3.addressing_style``."""
    concurrency: int = 16
    """Puts in flight at once."""


class S3Artifacts:
    def __init__(self, client: Any, bucket: str, concurrency: int = 16) -> None:
        self._s3 = client
        self.bucket = bucket
        self._slots = asyncio.Semaphore(concurrency)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, target: S3Target, *, create_bucket: bool = True, check_bucket: bool = True, ca_bundle: str | None = None
    ) -> AsyncIterator[S3Artifacts]:
        session = aioboto3.Session()
        config = Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=3,
            read_timeout=15,
            max_pool_connections=64,
            # Per request, botocore otherwise rebuilds its user agent from ~40 parts and
            # validates parameters we build ourselves: together ~15% of a PUT's CPU here.
            # A fixed agent also names replaywatch in S3 access logs.
            user_agent=f"replaywatch/{__version__} botocore/{botocore.__version__}",
            parameter_validation=False,
            s3={"addressing_style": target.addressing_style},
        )
        async with session.client(
            "s3",
            endpoint_url=target.endpoint,
            region_name=target.region,
            aws_access_key_id=target.access_key_id,
            aws_secret_access_key=target.secret_access_key,
            config=config,
            verify=ca_bundle,
        ) as client:
            share_endpoint_cache(client)
            store = cls(client, target.bucket, target.concurrency)
            if check_bucket:
                await store.ensure_bucket(create_bucket)
            yield store

    async def ensure_bucket(self, create: bool = True) -> None:
        """Check that the bucket exists; create it when missing only with ``create``
        (``--create-bucket``), else stop with one message that says so."""
        try:
            await self._s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) == 404:
                if not create:
                    raise ServiceRefused(
                        f"bucket {self.bucket!r} does not exist; create it or run with --create-bucket "
                        "(REPLAYWATCH_CREATE_BUCKET=true)"
                    ) from None
                try:
                    await self._s3.create_bucket(Bucket=self.bucket)
                except ClientError as exc2:
                    if _code(exc2) == "BucketAlreadyOwnedByYou":
                        return  # another replaywatch starting beside this one created it first
                    raise ConfigError(f"cannot create bucket {self.bucket!r}: {exc2}") from None
            elif _status(exc) == 403:
                raise ConfigError(f"no access to bucket {self.bucket!r}; check the S3 credentials") from None
            elif 400 <= _status(exc) < 500 and _status(exc) not in (408, 429):
                raise ConfigError(
                    f"S3 answered {_status(exc)} when asked for bucket {self.bucket!r}; check REPLAYWATCH_S3_BUCKET "
                    "(a valid bucket name: 3 to 63 lower-case letters, digits, dots and hyphens) and the endpoint"
                ) from None
            else:
                raise TransientError(f"S3 head_bucket failed: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"S3 unreachable: {exc}") from exc

    def uri(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{object_key(sha256)}"

    async def put(self, diff: Diff, run_id: str, step_id: str) -> str:
        """Store the diff unless its sha is there already; return its s3:// URI.

        One conditional request (``If-None-Match: *``): S3 refuses to overwrite an
        existing key with 412, which here means "already stored". Each request costs
        milliseconds of CPU in botocore, so a HEAD first would double the cost.
        """
        async with self._slots, translate_s3_errors(f"the put of diff {diff.sha256}", self.bucket):
            started = time.perf_counter()
            try:
                await self._s3.put_object(
                    Bucket=self.bucket,
                    Key=object_key(diff.sha256),
                    Body=diff.body,
                    ContentType="application/json",
                    Metadata=object_metadata(diff, run_id, step_id),
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if not _already_stored(exc):
                    raise
            finally:
                telemetry.S3_PUT_SECONDS.record(time.perf_counter() - started)
        return self.uri(diff.sha256)

    async def get(self, sha256: str) -> tuple[bytes, dict[str, Any]]:
        """(body, head) of a diff object (``replaywatch diff`` and ``serve``). NotFound when
        there is no such object; TransientError when S3 cannot be reached."""
        try:
            got = await self._s3.get_object(Bucket=self.bucket, Key=object_key(sha256))
            body: bytes = await got["Body"].read()
            return body, {"ContentType": got["ContentType"], "Metadata": got["Metadata"]}
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"no diff object {object_key(sha256)} in bucket {self.bucket}") from None
            raise TransientError(f"S3 get_object failed: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"S3 get_object failed: {exc}") from exc

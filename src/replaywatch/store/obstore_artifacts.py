"""Diff objects in S3 through obstore (Rust's ``object_store``), the default client.

Same objects, keys, metadata and conditional put (``If-None-Match: *``) as the aioboto3
adapter in ``artifacts.py``, which stays supported (``REPLAYWATCH_S3_CLIENT=aioboto3``).
Measured (bench/README.md): the signing and HTTP work of a PUT happen in
Rust, off the Python interpreter, so each upload costs the consumer a fraction of
botocore's CPU. The bucket is checked (and created on request) once at start with
aioboto3: obstore has no bucket API.

obstore's own retries are off: a failure surfaces at once and is sorted like botocore's
(``translate``): refused credentials and a missing bucket stop the process, another 4xx
refuses this one object, the rest are transient and retried by the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from replaywatch import telemetry
from replaywatch.compare import Diff
from replaywatch.exceptions import NotFound, RecordRejected, ReplaywatchError, ServiceRefused, TransientError
from replaywatch.store.artifacts import S3Artifacts, S3Target, object_key, object_metadata, transient_code

_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")


def translate(exc: Exception, what: str, bucket: str) -> ReplaywatchError:
    """obstore's error as replaywatch's: what the pipeline does about it."""
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
        return ServiceRefused(
            f"S3 refused {what} in bucket {bucket!r}: {type(exc).__name__}; check that the bucket exists and that "
            "the credentials may write to it"
        )
    if isinstance(exc, FileNotFoundError):  # obstore's NotFoundError: on a put, the bucket
        return ServiceRefused(f"S3 refused {what}: bucket {bucket!r} does not exist; create it or run with "
                              "--create-bucket")  # fmt: skip
    m = _STATUS.search(str(exc))
    status = int(m.group(1)) if m else 0
    first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    code = m.group(1) if (m := _CODE.search(str(exc))) else ""
    if 400 <= status < 500 and status not in (408, 429) and not transient_code(code):
        return RecordRejected(f"S3 refused {what}: {status}: {first}")
    return TransientError(f"S3 failed during {what}: {status or type(exc).__name__}: {first}")


class ObstoreArtifacts:
    def __init__(self, store: Any, bucket: str, concurrency: int = 16) -> None:
        self._store = store
        self.bucket = bucket
        self._slots = asyncio.Semaphore(concurrency)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, target: S3Target, *, create_bucket: bool = True, check_bucket: bool = True
    ) -> AsyncIterator[ObstoreArtifacts]:
        if check_bucket:  # obstore has no bucket API: checked (and made) through aioboto3, once
            async with S3Artifacts.open(target, create_bucket=create_bucket):
                pass
        endpoint = target.endpoint
        config: dict[str, Any] = {"region": target.region}
        if endpoint:
            config["endpoint"] = endpoint
        if target.access_key_id and target.secret_access_key:  # else the AWS chain: environment, web identity, IMDS
            config["access_key_id"] = target.access_key_id
            config["secret_access_key"] = target.secret_access_key
        if target.addressing_style != "auto":
            config["virtual_hosted_style_request"] = target.addressing_style == "virtual"
        elif endpoint:
            config["virtual_hosted_style_request"] = False  # botocore's "auto" with a custom endpoint
        store = S3Store(
            target.bucket,
            config=config,  # type: ignore[arg-type]
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "connect_timeout": timedelta(seconds=3),
                "timeout": timedelta(seconds=15),
            },
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=15)},
        )
        yield cls(store, target.bucket, target.concurrency)

    def uri(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{object_key(sha256)}"

    async def put(self, diff: Diff, run_id: str, step_id: str) -> str:
        """Store the diff unless its sha is there already; return its s3:// URI. One
        conditional request: a 412 (or 409, a racing put of the same key) means stored."""
        async with self._slots:
            started = time.perf_counter()
            try:
                await obstore.put_async(
                    self._store,
                    object_key(diff.sha256),
                    diff.body,
                    mode="create",
                    attributes={"Content-Type": "application/json", **object_metadata(diff, run_id, step_id)},
                )
            except (AlreadyExistsError, PreconditionError):
                pass
            except (BaseError, OSError) as exc:
                if "409" in str(exc) and "ConditionalRequestConflict" in str(exc):
                    pass  # a concurrent put of the same content
                else:
                    raise translate(exc, f"the put of diff {diff.sha256}", self.bucket) from exc
            finally:
                telemetry.S3_PUT_SECONDS.record(time.perf_counter() - started)
        return self.uri(diff.sha256)

    async def get(self, sha256: str) -> tuple[bytes, dict[str, Any]]:
        """(body, head) of a diff object, in the shape ``S3Artifacts.get`` gives."""
        try:
            got = await obstore.get_async(self._store, object_key(sha256))
            body = bytes(await got.bytes_async())
        except FileNotFoundError:
            raise NotFound(f"no diff object {object_key(sha256)} in bucket {self.bucket}") from None
        except (BaseError, OSError) as exc:
            raise TransientError(f"S3 get failed: {str(exc).splitlines()[0][:300]}") from exc
        attributes = dict(got.attributes)
        content_type = str(attributes.pop("Content-Type", ""))
        meta = {k: str(v) for k, v in attributes.items() if k not in _STANDARD}
        return body, {"ContentType": content_type, "Metadata": meta}


_STANDARD = frozenset({"Content-Disposition", "Content-Encoding", "Content-Language", "Cache-Control",
                       "Content-Type", "Storage-Class"})  # fmt: skip

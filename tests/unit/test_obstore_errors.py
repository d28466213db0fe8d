"""obstore's failures sorted as botocore's are (``obstore_artifacts.translate``): what the
pipeline does about each (stop, dead-letter the record, or retry)."""

from __future__ import annotations

from obstore.exceptions import GenericError, PermissionDeniedError, UnauthenticatedError

from replaywatch.exceptions import RecordRejected, ServiceRefused, TransientError
from replaywatch.store.obstore_artifacts import translate


def _put_error(status: int, code: str) -> GenericError:
    return GenericError(f"Generic S3 error: Error performing PUT http://127.0.0.1:1/b/k in 1ms - Server "
                        f"returned non-2xx status code: {status} X: <Error><Code>{code}</Code></Error>\n\n"
                        "Debug source: ...")  # fmt: skip


def test_refused_credentials_and_a_missing_bucket_stop_the_process() -> None:
    assert isinstance(translate(PermissionDeniedError("403 SignatureDoesNotMatch"), "a put", "b"), ServiceRefused)
    assert isinstance(translate(UnauthenticatedError("401"), "a put", "b"), ServiceRefused)
    refused = translate(FileNotFoundError("NoSuchBucket"), "a put", "diffs")
    assert isinstance(refused, ServiceRefused) and "bucket 'diffs' does not exist" in str(refused)


def test_another_4xx_refuses_this_object_only() -> None:
    got = translate(_put_error(400, "InvalidArgument"), "the put of diff abc", "b")
    assert isinstance(got, RecordRejected)
    assert "400" in str(got) and "Debug source" not in str(got)  # one line, not obstore's debug dump


def test_server_errors_throttling_and_timeouts_are_transient() -> None:
    for status in (500, 503, 408, 429):
        assert isinstance(translate(_put_error(status, "SlowDown"), "a put", "b"), TransientError), status
    assert isinstance(translate(GenericError("error sending request: connection refused"), "a put", "b"),
                      TransientError)  # fmt: skip


def test_the_4xx_codes_s3_gives_to_passing_conditions_are_transient() -> None:
    for code in ("RequestTimeout", "ExpiredToken", "RequestTimeTooSkewed", "SlowDown"):
        assert isinstance(translate(_put_error(400, code), "a put", "b"), TransientError), code
    assert isinstance(translate(_put_error(400, "MalformedXML"), "a put", "b"), RecordRejected)


async def test_botocore_sorts_them_the_same() -> None:
    import pytest
    from botocore.exceptions import ClientError

    from replaywatch.store.artifacts import translate_s3_errors

    def error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutObject")

    for code, kind in (("RequestTimeout", TransientError), ("ExpiredToken", TransientError),
                       ("InvalidArgument", RecordRejected)):  # fmt: skip
        with pytest.raises(kind):
            async with translate_s3_errors("a put", "b"):
                raise error(code)

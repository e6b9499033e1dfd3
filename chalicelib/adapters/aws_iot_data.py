"""Publishing to AWS IoT Core over its HTTPS data plane (the ``Publisher`` port).

Also home of the small helpers the AWS adapters share: retrying throttled calls
with jittered backoff and turning what AWS says into a message a person can act
on. Clients should be built with botocore's ``adaptive`` or ``standard`` retry
mode (see :mod:`chalicelib.adapters.aws_env`); the explicit retry here is a
short extra layer for clients that were not, and for stubbed clients in tests,
which bypass botocore's own retries.

Nothing here logs payloads, certificates or credentials: only operation names,
error codes and topic names.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import UnavailableError

__all__ = [
    "IotDataPublisher",
    "TRANSIENT_ERROR_CODES",
    "ACCESS_ERROR_CODES",
    "aws_error_code",
    "aws_error_message",
    "call_with_retries",
    "unavailable_error",
]

log = logging.getLogger(__name__)

#: Error codes that mean "try again shortly": throttling and AWS-side hiccups.
#: (``LimitExceededException`` is deliberately absent: in IoT it means a quota,
#: such as the number of groups a thing may join, which waiting does not fix.)
TRANSIENT_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "InternalFailureException",
        "InternalFailure",
        "InternalException",
        "InternalServerException",
    }
)

#: Error codes that mean the control plane's own AWS identity is not allowed.
ACCESS_ERROR_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnauthorizedException",
        "ForbiddenException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)

Sleep = Callable[[float], None]


def aws_error_code(err: ClientError) -> str:
    """The AWS error code of ``err`` (``""`` when AWS sent none)."""
    return str(err.response.get("Error", {}).get("Code", ""))


def aws_error_message(err: ClientError) -> str:
    """AWS's human-readable message of ``err``, without botocore's decoration."""
    return str(err.response.get("Error", {}).get("Message", "")).strip()


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 2.0) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): capped exponential, jittered."""
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)


def call_with_retries(
    fn: Callable[..., Any],
    params: Mapping[str, Any],
    *,
    label: str,
    retries: int,
    sleep: Sleep,
    extra_retry_codes: frozenset[str] = frozenset(),
    base_delay: float = 0.1,
) -> Any:
    """Call ``fn(**params)``; on a transient error wait and try again, at most ``retries`` times.

    Errors in :data:`TRANSIENT_ERROR_CODES` (or ``extra_retry_codes``) are
    retried; every other error, and the last transient one, propagates
    unchanged (a :class:`ClientError` or :class:`BotoCoreError`), for the caller
    to classify. ``label`` names the call in logs (e.g. ``iot:CreateThing``).
    """
    retryable = TRANSIENT_ERROR_CODES | extra_retry_codes
    attempt = 0
    while True:
        try:
            return fn(**params)
        except ClientError as err:
            code = aws_error_code(err)
            if code not in retryable or attempt >= retries:
                raise
            delay = backoff_delay(attempt, base=base_delay)
            log.warning("%s failed with %s; retry %d/%d in %.2fs",
                        label, code, attempt + 1, retries, delay)
            sleep(delay)
            attempt += 1


def unavailable_error(err: Exception, label: str) -> UnavailableError:
    """An :class:`UnavailableError` for a failed AWS call, saying what a person can do about it."""
    if isinstance(err, ClientError):
        code = aws_error_code(err)
        detail = aws_error_message(err)
        if code in ACCESS_ERROR_CODES:
            return UnavailableError(
                f"AWS refused {label} ({code}: {detail}). Grant the control plane's "
                f"role {label} on this resource, or check its credentials.",
                code="aws_access_denied",
            )
        if code in TRANSIENT_ERROR_CODES:
            return UnavailableError(
                f"AWS is throttling or briefly unavailable for {label} ({code}); "
                "retry in a few seconds.",
            )
        return UnavailableError(f"AWS call {label} failed ({code}: {detail}).")
    if isinstance(err, BotoCoreError):
        return UnavailableError(
            f"could not complete AWS call {label}: {err}. Check network access to AWS, "
            "the region and the credentials of the control plane."
        )
    return UnavailableError(f"AWS call {label} failed: {err}")


class IotDataPublisher:
    """The ``Publisher`` port on AWS IoT Core: ``iot-data`` ``Publish`` at QoS 1."""

    def __init__(self, client: Any, *, retries: int = 2, sleep: Sleep = time.sleep) -> None:
        """``client`` is a boto3 ``iot-data`` client pointed at the account's ATS endpoint.

        ``retries`` extra attempts are made on throttling, on top of whatever
        retrying the client itself is configured for.
        """
        self._client = client
        self._retries = retries
        self._sleep = sleep

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` to ``topic`` at QoS 1 (AWS IoT has accepted it when this returns).

        Raises :class:`~chalicelib.errors.UnavailableError` when AWS IoT did not
        accept the message after retries; the message says why.
        """
        try:
            call_with_retries(
                self._client.publish,
                {"topic": topic, "qos": 1, "payload": payload},
                label="iot:Publish",
                retries=self._retries,
                sleep=self._sleep,
            )
        except ClientError as err:
            code = aws_error_code(err)
            if code == "RequestEntityTooLargeException":
                raise UnavailableError(
                    f"AWS IoT refused a {len(payload)}-byte message on {topic}: larger "
                    "than its 128 KiB limit."
                ) from err
            base = unavailable_error(err, "iot:Publish")
            raise UnavailableError(
                f"could not publish to {topic}: {base.message}", code=base.code
            ) from err
        except BotoCoreError as err:
            base = unavailable_error(err, "iot:Publish")
            raise UnavailableError(f"could not publish to {topic}: {base.message}") from err

"""Errors the emulator answers as SageMaker does: injected faults, model errors, and no capacity."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ACCOUNT_ID",
    "NO_CAPACITY_MESSAGE",
    "Capacity",
    "EndpointFaults",
    "ServiceError",
    "SleepRequest",
    "model_error",
    "model_timeout",
    "no_capacity",
    "pre_call_fault",
    "take",
    "validation_error",
]

ACCOUNT_ID = "123456789012"
# SageMaker's answer to an invocation of an inference component that has no copy.
NO_CAPACITY_MESSAGE = (
    "Inference Component has no capacity to process this request. ApplicationAutoScaling may "
    "be in-progress (if configured) or try to increase the capacity by invoking "
    "UpdateInferenceComponentRuntimeConfig API."
)


class EndpointFaults(BaseModel):
    """Faults and part splitting for one endpoint; counters apply to the next N invocations."""

    model_config = ConfigDict(extra="forbid")

    throttle: int = Field(default=0, ge=0, description="ThrottlingException (HTTP 400)")
    model_not_ready: int = Field(default=0, ge=0, description="ModelNotReadyException (429)")
    service_unavailable: int = Field(default=0, ge=0, description="ServiceUnavailable (503)")
    internal_failure: int = Field(default=0, ge=0, description="InternalFailure (500)")
    model_error: int = Field(default=0, ge=0, description="ModelError (424) without calling")
    model_error_status: int = Field(default=500, ge=400, le=599)
    model_error_message: str = "injected model failure"
    stream_error: int = Field(default=0, ge=0, description="ModelStreamError mid-stream")
    stream_error_after_parts: int = Field(default=0, ge=0)
    stream_error_code: str = "ModelInvocationTimeExceeded"
    stream_error_message: str = "injected model stream error"
    stream_failure: int = Field(default=0, ge=0, description="InternalStreamFailure mid-stream")
    stream_failure_after_parts: int = Field(default=0, ge=0)
    first_byte_delay_s: float = Field(default=0.0, ge=0, description="every call, while set")
    max_part_bytes: int | None = Field(default=None, ge=1, description="overrides the setting")
    split_seed: int | None = Field(default=None, description="overrides the setting")


class ServiceError(Exception):
    """An error SageMaker returns before any response byte, in its rest-json shape.

    Parameters
    ----------
    code
        The error code (``x-amzn-ErrorType``), e.g. ``ValidationError``.
    status
        The HTTP status.
    body
        The JSON body.
    """

    def __init__(self, code: str, status: int, body: dict[str, Any]) -> None:
        super().__init__(code)
        self.code, self.status, self.body = code, status, body

    def response(self, request_id: str) -> JSONResponse:
        """The HTTP response botocore parses back into this error."""
        return JSONResponse(
            self.body,
            status_code=self.status,
            headers={"x-amzn-ErrorType": self.code, "x-amzn-RequestId": request_id},
        )


def validation_error(message: str) -> ServiceError:
    """A 400 ``ValidationError`` with ``message``."""
    return ServiceError("ValidationError", 400, {"Message": message})


def no_capacity() -> ServiceError:
    """SageMaker's 400 for a component without a copy (``NoCapacityInvocationFailures``)."""
    return validation_error(NO_CAPACITY_MESSAGE)


def take(faults: EndpointFaults, counter: str) -> bool:
    """Consume one unit of an injected fault counter; whether it was armed."""
    remaining: int = getattr(faults, counter)
    if remaining <= 0:
        return False
    setattr(faults, counter, remaining - 1)
    return True


def pre_call_fault(faults: EndpointFaults) -> ServiceError | None:
    """The next armed fault that SageMaker reports before calling the container, if any."""
    if take(faults, "throttle"):
        # SageMaker really answers throttling with HTTP 400 and a null message.
        return ServiceError("ThrottlingException", 400, {"message": None})
    if take(faults, "model_not_ready"):
        return ServiceError(
            "ModelNotReadyException", 429, {"Message": "Model is not ready to serve requests"}
        )
    if take(faults, "service_unavailable"):
        return ServiceError(
            "ServiceUnavailable", 503, {"Message": "Service is temporarily unavailable"}
        )
    if take(faults, "internal_failure"):
        return ServiceError("InternalFailure", 500, {"Message": "Internal failure"})
    return None


def model_timeout(variant_name: str) -> ServiceError:
    """The 424 ``ModelError`` of a container that did not answer in time."""
    message = (
        "Your invocation timed out while waiting for a response from container "
        f"{variant_name}. Review the latency metrics for each container in Amazon "
        "CloudWatch, resolve the issue, and try again."
    )
    return ServiceError("ModelError", 424, {"Message": message})


def model_error(
    *, variant_name: str, region: str, endpoint: str, status: int, body: str
) -> ServiceError:
    """The 424 ``ModelError`` wrapping a container's own error answer."""
    kind = "client" if status < 500 else "server"
    log_group = f"/aws/sagemaker/Endpoints/{endpoint}"
    message = (
        f"Received {kind} error ({status}) from {variant_name} with message "
        f'"{body}". See https://{region}.console.aws.amazon.com/cloudwatch/home'
        f"?region={region}#logEventViewer:group={log_group} in account {ACCOUNT_ID} "
        "for more information."
    )
    return ServiceError(
        "ModelError",
        424,
        {
            "Message": message,
            "OriginalStatusCode": status,
            "OriginalMessage": body,
            "LogStreamArn": f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{log_group}",
        },
    )


class SleepRequest(BaseModel):
    """Body of ``PUT /_capacity``: put an endpoint or inference component to sleep (or wake it)."""

    model_config = ConfigDict(extra="forbid")

    asleep: bool = True
    wake_after_s: float | None = Field(
        default=None, ge=0, description="seconds from the first refused request; default: setting"
    )


@dataclass
class _Sleeper:
    wake_after_s: float
    waking_since: float | None = None


class Capacity:
    """Which endpoints or components have no copy, and when a wake-up under way completes.

    As in SageMaker with scale to zero: a sleeping target refuses every invocation with the
    no-capacity ``ValidationError``; the first refusal starts the wake-up (the step-scaling
    alarm), and ``wake_after_s`` later the target serves again.

    Parameters
    ----------
    wake_after_s
        Default wake-up time.
    asleep
        Targets asleep from the start.
    clock
        Monotonic clock (seconds).
    """

    def __init__(
        self,
        wake_after_s: float,
        asleep: list[str] | tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = wake_after_s
        self._clock = clock
        self._asleep = {name: _Sleeper(wake_after_s) for name in asleep}
        self.refused: dict[str, int] = {}

    def set(self, name: str, request: SleepRequest) -> None:
        """Put ``name`` to sleep, or wake it at once."""
        if not request.asleep:
            self._asleep.pop(name, None)
            return
        wake = self._default if request.wake_after_s is None else request.wake_after_s
        self._asleep[name] = _Sleeper(wake)

    def admit(self, name: str) -> bool:
        """Whether ``name`` has a copy now; a refusal starts (or continues) its wake-up."""
        sleeper = self._asleep.get(name)
        if sleeper is None:
            return True
        now = self._clock()
        if sleeper.waking_since is None:
            sleeper.waking_since = now
        elif now - sleeper.waking_since >= sleeper.wake_after_s:
            del self._asleep[name]
            return True
        self.refused[name] = self.refused.get(name, 0) + 1
        return False

    def snapshot(self) -> dict[str, Any]:
        """The sleeping targets, and the refusals counted per target."""
        now = self._clock()
        return {
            "asleep": {
                name: {
                    "wake_after_s": sleeper.wake_after_s,
                    "waking_for_s": None
                    if sleeper.waking_since is None
                    else round(now - sleeper.waking_since, 3),
                }
                for name, sleeper in self._asleep.items()
            },
            "no_capacity_failures": dict(self.refused),
        }

    def clear(self) -> None:
        """Wake everything at once (the refusals stay counted until ``DELETE /_stats``)."""
        self._asleep.clear()

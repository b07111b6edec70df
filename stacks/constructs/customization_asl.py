"""Amazon States Language helpers for the customization pipeline: intrinsics, S3 and job shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_stepfunctions as sfn

__all__ = [
    "CUSTOMIZATION_PREFIX",
    "DATASETS_PREFIX",
    "RUNS_PREFIX",
    "RunLocations",
    "cluster",
    "processing_input",
    "render",
    "states_array",
    "states_format",
    "training_channel",
]

CUSTOMIZATION_PREFIX = "customization/"
DATASETS_PREFIX = f"{CUSTOMIZATION_PREFIX}datasets/"
RUNS_PREFIX = f"{CUSTOMIZATION_PREFIX}runs/"


def states_format(template: str, *paths: str, raw: bool) -> str:
    """``States.Format`` of a template and JSONPaths.

    Parameters
    ----------
    template:
        The format string, ``{}`` for each path.
    *paths:
        JSONPaths into the state input, e.g. ``$.run_id``.
    raw:
        Raw ASL text (for custom states, rendered by :func:`render`), else a CDK JsonPath token
        (for SDK-integration tasks).

    Returns
    -------
    str
        The intrinsic, as text or token.
    """
    if not raw:
        return sfn.JsonPath.format(template, *[sfn.JsonPath.string_at(path) for path in paths])
    return f"States.Format('{template}', {', '.join(paths)})"


def states_array(*items: str) -> str:
    """``States.Array`` in raw ASL text: ``$.`` items are paths, others string literals."""
    rendered = [item if item.startswith("$.") else f"'{item}'" for item in items]
    return f"States.Array({', '.join(rendered)})"


def render(parameters: dict[str, Any]) -> dict[str, Any]:
    """Turn values that are JSONPath expressions into ``Key.$`` entries, as the ASL wants.

    Parameters
    ----------
    parameters:
        A task's parameters, with intrinsic or path strings as plain values.

    Returns
    -------
    dict
        The same parameters with those keys suffixed ``.$``, recursively.
    """
    rendered: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, dict):
            rendered[key] = render(value)
        elif isinstance(value, list):
            rendered[key] = [render(item) if isinstance(item, dict) else item for item in value]
        elif isinstance(value, str) and value.startswith(("States.", "$.")):
            rendered[f"{key}.$"] = value
        else:
            rendered[key] = value
    return rendered


def processing_input(name: str, s3_uri: str, local_path: str) -> dict[str, Any]:
    """A processing job's S3 prefix input, copied to ``local_path`` before the job starts."""
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": s3_uri,
            "LocalPath": local_path,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
        },
    }


def training_channel(name: str, s3_uri: str) -> dict[str, Any]:
    """A training job's S3 prefix channel, replicated to every instance."""
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3Uri": s3_uri,
                "S3DataType": "S3Prefix",
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def cluster(instance_type: str) -> dict[str, Any]:
    """A one-instance processing cluster with a 100 GB volume."""
    return {
        "ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 100}
    }


@dataclass(frozen=True, slots=True)
class RunLocations:
    """Names and S3 URIs of one run, built at run time from the execution's ``$.run_id``.

    Attributes
    ----------
    bucket:
        The model-assets bucket's name.
    name_prefix:
        Prefix of every job name, ``chatbot-<env>-cust``.
    """

    bucket: str
    name_prefix: str

    def uri(self, *parts: str, raw: bool = True) -> str:
        """``s3://<bucket>/customization/runs/<run_id>/<parts...>``."""
        return states_format(
            f"s3://{self.bucket}/{RUNS_PREFIX}{{}}/" + "/".join(parts), "$.run_id", raw=raw
        )

    def dataset_uri(self) -> str:
        """``s3://<bucket>/customization/datasets/<run_id>/`` (raw ASL)."""
        return states_format(f"s3://{self.bucket}/{DATASETS_PREFIX}{{}}/", "$.run_id", raw=True)

    def name(self, suffix: str, *, raw: bool = True) -> str:
        """``chatbot-<env>-cust-<run_id>-<suffix>``: a job name."""
        return states_format(f"{self.name_prefix}-{{}}-{suffix}", "$.run_id", raw=raw)

    def model_uri(self, *, raw: bool) -> str:
        """The training job's uncompressed output: the merged model, an S3 prefix."""
        return states_format(
            f"s3://{self.bucket}/{RUNS_PREFIX}{{}}/training/{self.name_prefix}-{{}}-train"
            "/output/model/",
            "$.run_id",
            "$.run_id",
            raw=raw,
        )

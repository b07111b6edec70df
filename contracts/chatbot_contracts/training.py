"""Customization job contract: metric log lines, hyperparameter names and evaluation engines."""

from __future__ import annotations

__all__ = [
    "EVALUATION_ENGINES",
    "HP_CHECKPOINT_STEPS",
    "METRIC_DEFINITIONS",
    "METRIC_NAMES",
    "SPOT_CHECKPOINT_STEPS",
    "metric_regex",
]

# The training job prints `name=value;` fields; SageMaker parses them with these regexes.
METRIC_NAMES: tuple[str, ...] = ("train_loss", "validation_loss", "tokens_per_second")


def metric_regex(name: str) -> str:
    """Regex that captures the value of metric ``name`` in a training log line.

    Parameters
    ----------
    name
        A metric name as the training job prints it, e.g. ``train_loss``.

    Returns
    -------
    str
        A regex with one group, the number, as SageMaker's ``MetricDefinitions`` expect it.
    """
    return rf"{name}=([0-9.eE+-]+);"


# SageMaker training job MetricDefinitions, one per metric name.
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = tuple(
    {"Name": name, "Regex": metric_regex(name)} for name in METRIC_NAMES
)

# Hyperparameter the pipeline sets for spot training, and the value it sets.
HP_CHECKPOINT_STEPS = "checkpoint_steps"
SPOT_CHECKPOINT_STEPS = 50

# `python -m customize evaluate --engine NAME`: the serving engine (vLLM, as the endpoint
# runs it) or transformers (CPU and the local path).
EVALUATION_ENGINES: tuple[str, ...] = ("transformers", "vllm")

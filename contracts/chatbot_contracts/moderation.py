"""The five moderation labels (GPT-JT-Moderation-6B's), least to most cautious."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

__all__ = [
    "DEFAULT_BLOCKED_LABELS",
    "MODERATION_LABELS",
    "ModerationLabel",
    "most_cautious",
]

ModerationLabel = Literal[
    "casual",
    "possibly needs caution",
    "probably needs caution",
    "needs caution",
    "needs intervention",
]

MODERATION_LABELS: tuple[ModerationLabel, ...] = get_args(ModerationLabel)
"""Ordered from least to most cautious; the order defines the aggregate label of a batch."""

DEFAULT_BLOCKED_LABELS: tuple[ModerationLabel, ...] = ("needs intervention",)
"""Labels the front door refuses unless the environment configures others."""


def most_cautious(labels: Iterable[ModerationLabel]) -> ModerationLabel:
    """The most cautious of ``labels`` (``casual`` for none).

    Parameters
    ----------
    labels
        Labels of a batch of texts.

    Returns
    -------
    ModerationLabel
        The label that ranks highest in :data:`MODERATION_LABELS`.
    """
    return max(labels, key=MODERATION_LABELS.index, default=MODERATION_LABELS[0])

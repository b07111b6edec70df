"""Moderation: few-shot prompt per text; the backend may answer only a label where it can."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from chatbot_contracts.moderation import MODERATION_LABELS, ModerationLabel, most_cautious
from inference_server.backend_client import BackendClient
from inference_server.protocol import ModerationResponse

__all__ = ["FALLBACK_LABEL", "Moderator", "choice_params", "most_cautious", "parse_label"]

FALLBACK_LABEL: ModerationLabel = MODERATION_LABELS[-1]
_INPUT_PLACEHOLDER = "{input}"
# Longer labels first, so that a label ending in a shorter one is not read as the shorter.
_BY_LENGTH = sorted(MODERATION_LABELS, key=len, reverse=True)
_LABEL_PATTERN = re.compile(r"\b(?:" + "|".join(re.escape(label) for label in _BY_LENGTH) + r")\b")
_BY_TEXT: dict[str, ModerationLabel] = {label: label for label in MODERATION_LABELS}
_NUMBERED = {str(n): label for n, label in enumerate(MODERATION_LABELS, start=1)}


def choice_params() -> dict[str, Any]:
    """Backend fields that restrict the completion to exactly one of the five labels.

    vLLM (0.12 and later) takes ``structured_outputs.choice`` on ``/v1/completions``: the
    engine masks every token that would leave the choice list, so the output *is* a label.
    The scripted backend (``local.scripted_backend``) understands the same field.

    Returns
    -------
    dict[str, Any]
        ``{"structured_outputs": {"choice": [...five labels...]}}``.
    """
    return {"structured_outputs": {"choice": list(MODERATION_LABELS)}}


def parse_label(output: str) -> ModerationLabel:
    """Read a label from free-text model output.

    The output must open with a label (models often go on to invent more examples after it,
    and those do not count) or with a bare option number as listed in the prompt (``"4"``).
    Output that opens otherwise ("not casual; needs intervention") gets the most cautious
    label it mentions, so a negation never reads as ``casual``; output that mentions none is
    unparseable and maps to the most cautious label of all.

    Parameters
    ----------
    output
        The generated text.

    Returns
    -------
    str
        One of the five labels.
    """
    text = " ".join(output.lower().replace("_", " ").split())
    opening = re.sub(r"^[^\w]+", "", text)
    match = _LABEL_PATTERN.match(opening)
    if match is not None:
        return _BY_TEXT[match.group(0)]
    number = re.match(r"^(\d)\b", opening)
    if number is not None and number.group(1) in _NUMBERED:
        return _NUMBERED[number.group(1)]
    mentioned = [_BY_TEXT[label] for label in _LABEL_PATTERN.findall(text)]
    if mentioned:
        return most_cautious(mentioned)
    return FALLBACK_LABEL


class Moderator:
    """Classifies texts with a few-shot prompt on the backend.

    Parameters
    ----------
    backend
        The model backend.
    prompt_template
        Few-shot prompt text with one ``{input}`` placeholder where the text goes.
    max_tokens
        Tokens to generate per classification: enough for the longest label.
    choice
        Ask the backend to answer exactly one label (:func:`choice_params`); an answer that
        is still not exactly a label maps to the most cautious one. ``False`` (backends
        without constrained decoding, such as ``transformers serve``) parses free text
        with :func:`parse_label`.
    """

    def __init__(
        self,
        backend: BackendClient,
        prompt_template: str,
        *,
        max_tokens: int = 8,
        choice: bool = False,
    ):
        if prompt_template.count(_INPUT_PLACEHOLDER) != 1:
            raise ValueError("the moderation prompt needs exactly one {input} placeholder")
        self._backend = backend
        # The file's final newline would make the model start a new line instead of a label.
        self._before, self._after = prompt_template.rstrip().split(_INPUT_PLACEHOLDER)
        self._max_tokens = max_tokens
        self._choice = choice

    @property
    def constrained(self) -> bool:
        """Whether the backend is asked to answer only a label."""
        return self._choice

    def render(self, text: str) -> str:
        """Place one text into the few-shot prompt (newlines kept on one line)."""
        return self._before + " ".join(text.split()) + self._after

    async def classify_one(self, text: str) -> ModerationLabel:
        """Classify one text.

        Parameters
        ----------
        text
            The text to classify.

        Returns
        -------
        str
            Its label.
        """
        params: dict[str, Any] = {"max_tokens": self._max_tokens, "temperature": 0.0}
        if self._choice:
            completion = await self._backend.complete(self.render(text), params | choice_params())
            return _BY_TEXT.get(completion.text.strip(), FALLBACK_LABEL)
        completion = await self._backend.complete(self.render(text), params | {"stop": ["\n"]})
        return parse_label(completion.text)

    async def classify(self, texts: Sequence[str]) -> ModerationResponse:
        """Classify several texts concurrently (the backend batches them).

        Parameters
        ----------
        texts
            Texts to classify.

        Returns
        -------
        ModerationResponse
            One label per text and the most cautious one overall.
        """
        labels = list(await asyncio.gather(*(self.classify_one(text) for text in texts)))
        return ModerationResponse(label=most_cautious(labels), labels=labels)

"""Moderation: few-shot prompt per text, greedy decoding, robust label parsing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from chatbot_contracts.moderation import MODERATION_LABELS, ModerationLabel, most_cautious
from inference_server.backend_client import BackendClient
from inference_server.protocol import ModerationResponse

__all__ = ["FALLBACK_LABEL", "Moderator", "most_cautious", "parse_label"]

FALLBACK_LABEL: ModerationLabel = MODERATION_LABELS[-1]
_INPUT_PLACEHOLDER = "{input}"
# Longer labels first, so that a label ending in a shorter one is not read as the shorter.
_BY_LENGTH = sorted(MODERATION_LABELS, key=len, reverse=True)
_LABEL_PATTERN = re.compile("|".join(re.escape(label) for label in _BY_LENGTH))
_BY_TEXT: dict[str, ModerationLabel] = {label: label for label in MODERATION_LABELS}
_NUMBERED = {str(n): label for n, label in enumerate(MODERATION_LABELS, start=1)}


def parse_label(output: str) -> ModerationLabel:
    """Read a label from model output.

    The earliest label mentioned wins (models often go on to invent more examples); a bare
    option number (``"4"``) as listed in the prompt is accepted; anything else is unparseable
    and maps to the most cautious label.

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
    match = _LABEL_PATTERN.search(text)
    if match is not None:
        return _BY_TEXT[match.group(0)]
    number = re.match(r"^\W*(\d)\b", text)
    if number is not None and number.group(1) in _NUMBERED:
        return _NUMBERED[number.group(1)]
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
    """

    def __init__(self, backend: BackendClient, prompt_template: str, *, max_tokens: int = 8):
        if prompt_template.count(_INPUT_PLACEHOLDER) != 1:
            raise ValueError("the moderation prompt needs exactly one {input} placeholder")
        self._backend = backend
        # The file's final newline would make the model start a new line instead of a label.
        self._before, self._after = prompt_template.rstrip().split(_INPUT_PLACEHOLDER)
        self._max_tokens = max_tokens

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
        completion = await self._backend.complete(
            self.render(text),
            {"max_tokens": self._max_tokens, "temperature": 0.0, "stop": ["\n"]},
        )
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

"""Input and output moderation against the moderation endpoint, failing closed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from chatbot_contracts.container import ModerationRequest
from chatbot_contracts.moderation import MODERATION_LABELS
from front_door.errors import FrontDoorError, ModelWakingUpError, ModerationUnavailableError

MOST_CAUTIOUS_LABEL = MODERATION_LABELS[-1]
_SENTENCE_ENDS = (".", "!", "?", "\n", "\u3002", "\uff01", "\uff1f")


class JsonInvoker(Protocol):
    """What moderation needs from the endpoint client."""

    async def invoke_json(self, endpoint_name: str, body: BaseModel) -> dict[str, object]:
        """Invoke an endpoint with a JSON body and return its JSON answer."""
        ...


@dataclass(frozen=True)
class Verdict:
    """A moderation label and whether the environment's settings block it."""

    label: str
    blocked: bool


class Moderator:
    """Classifies text with the moderation endpoint.

    Parameters
    ----------
    invoker
        Endpoint client.
    endpoint_name
        Moderation endpoint.
    blocked_labels
        Labels that block (per environment).
    """

    def __init__(
        self, invoker: JsonInvoker, endpoint_name: str, blocked_labels: tuple[str, ...]
    ) -> None:
        self._invoker = invoker
        self._endpoint_name = endpoint_name
        self._blocked = frozenset(blocked_labels)

    def verdict(self, label: object) -> Verdict:
        """The verdict for a label; anything unknown is treated as the most cautious label.

        Parameters
        ----------
        label
            The endpoint's ``label`` field.

        Returns
        -------
        Verdict
            Label and block decision.
        """
        known = label if isinstance(label, str) and label in MODERATION_LABELS else None
        final = known or MOST_CAUTIOUS_LABEL
        return Verdict(final, final in self._blocked)

    async def classify(self, text: str) -> Verdict:
        """Classify ``text``; any failure of the endpoint refuses the request (fail closed).

        Parameters
        ----------
        text
            The text to check.

        Returns
        -------
        Verdict
            Label and block decision.

        Raises
        ------
        ModerationUnavailableError
            The moderation endpoint failed or could not be reached.
        ModelWakingUpError
            The moderation model is scaled to zero and waking up (refused the same way).
        """
        try:
            answer = await self._invoker.invoke_json(
                self._endpoint_name, ModerationRequest(inputs=text)
            )
        except ModelWakingUpError:
            raise  # still closed: no generation without moderation, but the client may retry
        except FrontDoorError as exc:
            raise ModerationUnavailableError(
                "Moderation is unavailable, so the request was refused."
            ) from exc
        return self.verdict(answer.get("label"))


class OutputWindow:
    """Decides when streamed output is due for a check and which text the check sees.

    A check is due every ``every_tokens`` tokens, or earlier at a sentence end once
    ``min_tokens`` arrived since the last check; it sees the last ``window_chars``
    characters, so a phrase split across two windows is still seen whole by one of them.

    Parameters
    ----------
    every_tokens, min_tokens, window_chars
        As described above.
    """

    def __init__(self, *, every_tokens: int, min_tokens: int, window_chars: int) -> None:
        self._every = every_tokens
        self._min = min(min_tokens, every_tokens)
        self._window_chars = window_chars
        self._parts: list[str] = []
        self._since_check = 0

    def add(self, text: str) -> bool:
        """Record one streamed token; return whether a check is due now.

        Parameters
        ----------
        text
            The token's text.

        Returns
        -------
        bool
            ``True`` when the window should be checked before relaying this token.
        """
        self._parts.append(text)
        self._since_check += 1
        at_sentence_end = text.rstrip(" \t").endswith(_SENTENCE_ENDS)
        due = self._since_check >= self._every or (
            at_sentence_end and self._since_check >= self._min
        )
        if due:
            self._since_check = 0
        return due

    @property
    def text(self) -> str:
        """All text recorded so far."""
        return "".join(self._parts)

    def window(self) -> str:
        """The text a windowed check classifies."""
        return self.text[-self._window_chars :]

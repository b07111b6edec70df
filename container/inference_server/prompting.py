"""Prompt rendering (the model's chat template or a configured Jinja template) and token counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jinja2.sandbox import ImmutableSandboxedEnvironment

from inference_server.protocol import Message

__all__ = ["Passage", "PromptBuilder", "StopTrimmer", "Tokenizer", "format_context"]


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved passage with its similarity score."""

    id: str
    title: str
    text: str
    score: float


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer we use."""

    chat_template: Any

    def __call__(self, text: str) -> Any: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


_CONTEXT_HEADER = (
    "Answer using the following passages when they are relevant. "
    "If they do not contain the answer, say so."
)


def format_context(passages: Sequence[Passage]) -> str:
    """Render passages as a numbered block for the prompt.

    Parameters
    ----------
    passages
        Retrieved passages, best first.

    Returns
    -------
    str
        ``""`` when there are none, else a header and one ``[n] title`` block per passage.
    """
    if not passages:
        return ""
    blocks = [f"[{n}] {p.title}\n{p.text}" for n, p in enumerate(passages, start=1)]
    return _CONTEXT_HEADER + "\n\n" + "\n\n".join(blocks)


class PromptBuilder:
    """Renders a conversation plus retrieved passages into the text sent to the backend.

    Parameters
    ----------
    tokenizer
        The served model's tokenizer; its chat template is used unless ``template`` is given,
        and it counts prompt tokens.
    template
        A Jinja template (e.g. OpenChatKit ``<human>:``/``<bot>:``) for models without a chat
        template. It sees ``messages`` (role/content dicts), ``context`` (rendered passages, may
        be empty), ``passages`` and ``system_prompt``.
    system_prompt
        Optional system instruction placed before the conversation.
    """

    def __init__(
        self, tokenizer: Tokenizer, *, template: str | None = None, system_prompt: str | None = None
    ) -> None:
        if template is None and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the tokenizer has no chat template: set option.prompt_template to a template file"
            )
        self._tokenizer = tokenizer
        self._system_prompt = system_prompt
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = environment.from_string(template) if template is not None else None

    @classmethod
    def from_setting(
        cls, tokenizer: Tokenizer, prompt_template: str, *, system_prompt: str | None = None
    ) -> PromptBuilder:
        """Build from the ``prompt_template`` setting: ``tokenizer`` or a template file path.

        Parameters
        ----------
        tokenizer
            The served model's tokenizer.
        prompt_template
            ``"tokenizer"`` or the path of a Jinja template file.
        system_prompt
            Optional system instruction.

        Returns
        -------
        PromptBuilder
            The builder.
        """
        if prompt_template == "tokenizer":
            return cls(tokenizer, system_prompt=system_prompt)
        text = Path(prompt_template).read_text(encoding="utf-8")
        return cls(tokenizer, template=text, system_prompt=system_prompt)

    def render(self, messages: Sequence[Message], passages: Sequence[Passage] = ()) -> str:
        """Render the prompt.

        Parameters
        ----------
        messages
            The conversation; the last turn is the user's.
        passages
            Retrieved passages to ground the answer.

        Returns
        -------
        str
            The prompt text, ending where the assistant's answer begins.
        """
        context = format_context(passages)
        turns = [{"role": m.role, "content": m.content} for m in messages]
        if self._template is not None:
            return self._template.render(
                messages=turns,
                context=context,
                passages=[{"id": p.id, "title": p.title, "text": p.text} for p in passages],
                system_prompt=self._system_prompt or "",
            )
        system_parts = [part for part in (self._system_prompt, context) if part]
        if turns and turns[0]["role"] == "system":
            system_parts.insert(0, turns.pop(0)["content"])
        if system_parts:
            turns.insert(0, {"role": "system", "content": "\n\n".join(system_parts)})
        rendered = self._tokenizer.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    def count_tokens(self, text: str) -> int:
        """Count tokens the way the backend will see them.

        Parameters
        ----------
        text
            Prompt or generated text.

        Returns
        -------
        int
            Number of token ids.
        """
        return len(self._tokenizer(text)["input_ids"])


class StopTrimmer:
    """Cuts a token stream at the first stop word, holding back text that may start one.

    vLLM applies ``stop`` itself; some OpenAI-compatible servers (``transformers serve``'s
    completions endpoint) ignore it, so the server enforces it too. Only a suffix that could
    begin a stop word is delayed, so tokens are otherwise relayed as they arrive.

    Parameters
    ----------
    stop_words
        Strings that end the answer; they are not part of the output.
    """

    def __init__(self, stop_words: Sequence[str]) -> None:
        self._stops = [word for word in stop_words if word]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add streamed text and return what may be emitted now.

        Parameters
        ----------
        text
            The next streamed piece.

        Returns
        -------
        str
            Text safe to emit; after a stop word was seen, ``stopped`` is ``True`` and nothing
            more is returned.
        """
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._pending + text
        cut = min((i for i in (buffer.find(word) for word in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return buffer[:cut]
        hold = 0
        for word in self._stops:
            for size in range(min(len(word) - 1, len(buffer)), 0, -1):
                if buffer.endswith(word[:size]):
                    hold = max(hold, size)
                    break
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        """Return held-back text at the end of the stream (it did not become a stop word)."""
        text, self._pending = ("" if self.stopped else self._pending), ""
        return text

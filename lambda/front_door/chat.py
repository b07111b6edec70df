"""One chat turn end to end: history, moderation, generation and persistence, free of HTTP types."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from chatbot_contracts.container import Details, FinalEvent, StreamEvent, TokenEvent
from front_door.endpoint_client import ContainerStream, EndpointClient
from front_door.errors import (
    FrontDoorError,
    InvalidRequestError,
    RequestTooLargeError,
    StreamInterruptedError,
)
from front_door.moderation import Moderator, OutputWindow, Verdict
from front_door.observability import RequestMetrics, bind_log_context, get_logger
from front_door.protocol import ChatCompletionRequest
from front_door.sessions import NewMessage, SessionStore, new_session_id
from front_door.settings import Settings

REDACTED_INPUT = "[removed by moderation]"
_FINISH_REASONS = {"stop": "stop", "eos": "stop", "eos_token": "stop", "length": "length"}


@dataclass(frozen=True)
class Delta:
    """Text to relay to the client."""

    text: str


@dataclass(frozen=True)
class Finish:
    """The turn ended (and is stored); the last chunk carries these."""

    finish_reason: str
    moderation: dict[str, str | None]
    sources: list[dict[str, Any]]
    usage: dict[str, int]
    retrieval_error: str | None = None


@dataclass(frozen=True)
class Failure:
    """The turn broke after the response started; the client gets an error event."""

    error: FrontDoorError


Event = Delta | Finish | Failure


@dataclass
class Turn:
    """A turn that passed every check before generation, with its open model stream."""

    request: ChatCompletionRequest
    principal: str
    session_id: str
    expected_count: int | None
    title: str
    input_label: str
    stream: ContainerStream | None
    metrics: RequestMetrics
    started: float
    completion_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def input_blocked(self) -> bool:
        """Whether input moderation refused the turn (no generation happens)."""
        return self.stream is None


@dataclass
class _Outcome:
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    output_label: str | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    retrieval_error: str | None = None
    blocked: bool = False
    incomplete: bool = True
    persisted: bool = False


class ChatService:
    """Runs chat turns against the endpoints and the session store.

    Parameters
    ----------
    settings
        Front-door settings.
    endpoints
        SageMaker runtime client.
    moderator
        Moderation client.
    store
        Session store.
    """

    def __init__(
        self,
        settings: Settings,
        endpoints: EndpointClient,
        moderator: Moderator,
        store: SessionStore,
    ) -> None:
        self._settings = settings
        self._endpoints = endpoints
        self._moderator = moderator
        self._store = store
        self._limiter = anyio.CapacityLimiter(settings.max_pool_connections)
        self._closing: set[asyncio.Task[None]] = set()  # streams of refused turns, closing

    def _check_limits(self, request: ChatCompletionRequest) -> int:
        settings = self._settings
        if len(request.messages) > settings.max_request_messages:
            raise RequestTooLargeError(
                f"At most {settings.max_request_messages} messages per request.",
                param="messages",
            )
        if sum(len(m.text()) for m in request.messages) > settings.max_request_chars:
            raise RequestTooLargeError(
                f"The messages exceed {settings.max_request_chars} characters.",
                param="messages",
            )
        max_new = request.requested_max_tokens(settings.max_tokens_default)
        if max_new > settings.max_tokens_limit:
            raise InvalidRequestError(
                f"max_tokens must be at most {settings.max_tokens_limit}.", param="max_tokens"
            )
        return max_new

    async def start_turn(
        self, request: ChatCompletionRequest, principal: str, metrics: RequestMetrics
    ) -> Turn:
        """Validate limits, load history, then moderate the input while opening the model stream.

        Everything that can fail with a plain HTTP error happens here, before the response
        starts; nothing is written to the session store. The chat stream is opened together
        with the input-moderation call; nothing of it is relayed before the verdict, and a
        blocked input or a failed moderation call closes it (fail closed). An error opening
        the stream counts only when the input passed.

        Parameters
        ----------
        request
            The validated request.
        principal
            Calling principal.
        metrics
            The request's metrics.

        Returns
        -------
        Turn
            The started turn (with ``stream`` ``None`` when the input was blocked).
        """
        started = time.perf_counter()
        max_new_tokens = self._check_limits(request)
        history: list[dict[str, str]] = []
        expected_count: int | None = None
        if request.session_id:
            session_id = request.session_id
            header, history = await anyio.to_thread.run_sync(
                lambda: self._store.load_history(
                    session_id,
                    principal,
                    max_messages=self._settings.history_max_messages,
                    max_chars=self._settings.history_max_chars,
                ),
                limiter=self._limiter,
            )
            expected_count, title = header.message_count, header.title
        else:
            session_id = new_session_id()
            title = next(m.text() for m in request.messages if m.role == "user")
        bind_log_context(session_id=session_id)

        # Generation starts while the input is judged (the verdict gates the relay, not the
        # call), so time to first token is max(moderation, first token), not their sum.
        body = request.to_container_request(history, max_new_tokens=max_new_tokens, stream=True)
        opening = asyncio.ensure_future(
            self._endpoints.open_stream(self._settings.chat_endpoint, body)
        )
        try:
            verdict = await self._moderator.classify("\n".join(m.text() for m in request.messages))
        except BaseException:  # fail closed; a cancelled request closes the stream too
            self._close_when_open(opening)
            raise
        metrics.add("ModerationChecks", "Count", 1)
        stream: ContainerStream | None = None
        if verdict.blocked:
            self._close_when_open(opening)  # closing the stream stops generation upstream
            metrics.add("InputModerationBlocked", "Count", 1)
            if expected_count is None:
                title = REDACTED_INPUT  # the blocked text must not live on as the title
            get_logger().info("input blocked by moderation", extra={"label": verdict.label})
        else:
            stream = await opening
        return Turn(
            request=request,
            principal=principal,
            session_id=session_id,
            expected_count=expected_count,
            title=title,
            input_label=verdict.label,
            stream=stream,
            metrics=metrics,
            started=started,
        )

    def _close_when_open(self, opening: asyncio.Future[ContainerStream]) -> None:
        """Close a chat stream whose turn ended before it was used, without waiting for it.

        The refusal or error goes to the client at once; the stream is closed as soon as the
        endpoint has accepted it, and a failure to open it is of no interest any more.
        """

        async def close() -> None:
            try:
                stream = await opening
            except Exception:  # noqa: BLE001 - nobody waits for this stream any more
                return
            await stream.aclose()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def events(self, turn: Turn) -> AsyncGenerator[Event, None]:
        """Relay the turn as events and store it.

        The turn is stored before :class:`Finish` is yielded, so a client that saw the end
        can read it back. A broken stream, failed output moderation or a client that goes
        away still stores the turn, marked incomplete, with the text relayed so far.

        Parameters
        ----------
        turn
            A turn from :meth:`start_turn`.

        Yields
        ------
        Event
            Deltas, then one :class:`Finish` or :class:`Failure`.
        """
        outcome = _Outcome()
        try:
            if turn.stream is None:
                outcome.blocked = True
            else:
                async for delta in self._generate(turn, turn.stream, outcome):
                    yield Delta(delta)
            if outcome.blocked:
                outcome.finish_reason = "content_filter"
                yield Delta(self._settings.refusal_text)
            outcome.incomplete = False
            await self._persist(turn, outcome)
            yield Finish(
                finish_reason=outcome.finish_reason or "stop",
                moderation={"input": turn.input_label, "output": outcome.output_label},
                sources=outcome.sources,
                usage=outcome.usage,
                retrieval_error=outcome.retrieval_error,
            )
        except FrontDoorError as exc:
            turn.metrics.add("Errors", "Count", 1)
            get_logger().warning("turn failed", extra={"code": exc.code, "error": exc.message})
            if not outcome.persisted:
                outcome.incomplete = True
                outcome.finish_reason = "error"
                await self._persist_quietly(turn, outcome)
            yield Failure(exc)
        finally:
            with anyio.CancelScope(shield=True):
                if turn.stream is not None:
                    await turn.stream.aclose()
                if not outcome.persisted:  # the client went away mid-stream
                    outcome.incomplete = True
                    await self._persist_quietly(turn, outcome)
                turn.metrics.add("TokensOut", "Count", len(outcome.text))
                turn.metrics.flush()

    async def _generate(
        self, turn: Turn, stream: ContainerStream, outcome: _Outcome
    ) -> AsyncIterator[str]:
        """Relay tokens under windowed output checks, in the environment's moderation mode.

        A check is due every ``moderation_every_tokens`` tokens (earlier at a sentence end)
        and sees the last ``moderation_window_chars`` characters. The relay never runs more
        than one window ahead of the verdicts: when the next window comes due while a check
        still runs, the relay waits for that check.

        - ``async``: tokens are relayed as they arrive and judged behind; a flagged window
          stops the relay with at most ``moderation_every_tokens - 1`` tokens relayed after
          its last token.
        - ``sync``: a token is relayed only once a check of a window containing it passed;
          at most ``2 * moderation_every_tokens`` tokens are held back, and none of a flagged
          window is relayed.

        The check of the whole answer at the end is awaited before the turn is stored and
        the last chunk is sent (and, in ``sync``, before the last tokens are relayed).
        """
        sync = self._settings.output_moderation_mode == "sync"
        window = OutputWindow(
            every_tokens=self._settings.moderation_every_tokens,
            min_tokens=self._settings.moderation_min_tokens,
            window_chars=self._settings.moderation_window_chars,
        )
        tokens: list[str] = []  # every token received
        check: asyncio.Task[Verdict] | None = None
        check_len = covered_len = 0  # text length the running / last passed check saw
        check_tokens = cleared = 0  # tokens the running / last passed check covered
        items = aiter(stream)
        next_item: asyncio.Task[StreamEvent] | None = None

        def start_check() -> asyncio.Task[Verdict]:
            nonlocal check_len, check_tokens
            check_len, check_tokens = len(window.text), len(tokens)
            return asyncio.create_task(self._moderator.classify(window.window()))

        def relay() -> list[str]:
            """Tokens that may go to the client now, in order."""
            limit = cleared if sync else len(tokens)
            ready = tokens[len(outcome.text) : limit]
            if ready and not outcome.text:
                ttft_ms = (time.perf_counter() - turn.started) * 1000
                turn.metrics.add("TimeToFirstToken", "Milliseconds", ttft_ms)
            outcome.text.extend(ready)
            return ready

        try:
            while True:
                if sync and check is not None and len(outcome.text) < len(tokens):
                    # Held tokens go out as soon as their verdict arrives, not with the next
                    # token (which may be a decode step or more away).
                    if next_item is None:
                        next_item = asyncio.ensure_future(anext(items))
                    await asyncio.wait((next_item, check), return_when=asyncio.FIRST_COMPLETED)
                    if not next_item.done():
                        if self._apply(turn, check.result(), outcome):
                            return
                        check, covered_len, cleared = None, check_len, check_tokens
                        for text in relay():
                            yield text
                        continue
                try:
                    if next_item is not None:
                        event = await next_item
                    else:
                        event = await anext(items)
                except StopAsyncIteration:
                    break
                finally:
                    next_item = None
                for text in self._texts(event, outcome, streamed=bool(tokens)):
                    tokens.append(text)
                    if check is not None and check.done():
                        if self._apply(turn, check.result(), outcome):
                            return
                        check, covered_len, cleared = None, check_len, check_tokens
                    if window.add(text):
                        if check is not None:  # never more than one window ahead
                            if self._apply(turn, await check, outcome):
                                return
                            covered_len, cleared = check_len, check_tokens
                        check = start_check()
                    for ready in relay():
                        yield ready
            if check is not None:
                if self._apply(turn, await check, outcome):
                    return
                covered_len, cleared = check_len, check_tokens
            check = None
            answer = "".join(tokens)
            # Skip the final check only when a passed window check already saw the whole answer.
            seen_whole = covered_len == len(answer) <= self._settings.moderation_window_chars
            if (
                answer
                and not seen_whole
                and self._apply(turn, await self._moderator.classify(answer), outcome)
            ):
                return
            cleared = len(tokens)
            for text in relay():
                yield text
        finally:
            for task in (check, next_item):
                if task is not None and not task.done():
                    task.cancel()

    def _texts(self, event: StreamEvent, outcome: _Outcome, *, streamed: bool) -> list[str]:
        if isinstance(event, TokenEvent):
            return [event.token.text] if event.token.text else []
        if isinstance(event, FinalEvent):
            self._record_final(event.details, outcome)
            if not streamed and event.generated_text:
                return [event.generated_text]  # a container that did not stream
            return []
        raise StreamInterruptedError(f"The model failed mid-stream ({event.error.type}).")

    @staticmethod
    def _apply(turn: Turn, verdict: Verdict, outcome: _Outcome) -> bool:
        turn.metrics.add("ModerationChecks", "Count", 1)
        outcome.output_label = verdict.label
        if verdict.blocked:
            outcome.blocked = True
            turn.metrics.add("OutputModerationBlocked", "Count", 1)
        return verdict.blocked

    @staticmethod
    def _record_final(details: Details, outcome: _Outcome) -> None:
        reason = details.finish_reason or "stop"
        outcome.finish_reason = _FINISH_REASONS.get(reason, reason)
        outcome.retrieval_error = details.retrieval_error
        outcome.sources = [source.model_dump() for source in details.sources]
        prompt, generated = details.prompt_tokens, details.generated_tokens
        outcome.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": generated,
            "total_tokens": prompt + generated,
        }

    def _turn_messages(self, turn: Turn, outcome: _Outcome) -> list[NewMessage]:
        blocked_input = turn.input_blocked
        messages = [
            NewMessage(
                role=m.container_role(),
                content=REDACTED_INPUT if blocked_input else m.text(),
                moderation=turn.input_label if m.role == "user" else None,
                blocked=blocked_input,
            )
            for m in turn.request.messages
        ]
        reply = self._settings.refusal_text if outcome.blocked else "".join(outcome.text)
        messages.append(
            NewMessage(
                role="assistant",
                content=reply,
                finish_reason=outcome.finish_reason,
                moderation=turn.input_label if blocked_input else outcome.output_label,
                sources=outcome.sources,
                incomplete=outcome.incomplete,
                blocked=blocked_input,
            )
        )
        return messages

    async def _persist(self, turn: Turn, outcome: _Outcome) -> None:
        outcome.persisted = True  # one attempt only, whatever happens
        messages = self._turn_messages(turn, outcome)
        await anyio.to_thread.run_sync(
            lambda: self._store.append_turn(
                turn.session_id,
                turn.principal,
                messages,
                expected_count=turn.expected_count,
                title=turn.title,
            ),
            limiter=self._limiter,
        )

    async def _persist_quietly(self, turn: Turn, outcome: _Outcome) -> None:
        try:
            await self._persist(turn, outcome)
        except FrontDoorError as exc:
            get_logger().error("could not store the turn", extra={"code": exc.code})

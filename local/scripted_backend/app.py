"""The scripted backend's FastAPI app and command line: routes, statistics, script updates."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from local.scripted_backend.script import WORD_TOKENS, Script
from local.scripted_backend.wire import (
    ChatRequest,
    CompletionRequest,
    GenerationRequest,
    HideScriptedDisconnects,
    Message,
    State,
    barrier_message,
    complete,
    constrain_to_choices,
    error_response,
    plan_answer,
    stream_answer,
)

__all__ = ["build_app", "main"]


def build_app(script: Script | None = None) -> FastAPI:
    """Build the scripted OpenAI-compatible server.

    Parameters
    ----------
    script
        The rules to answer with; the default script answers every request with one
        fixed sentence.

    Returns
    -------
    FastAPI
        The app: ``/health``, ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``,
        ``/tokenize``, and for tests ``PUT|GET /_script``, ``GET|DELETE /_stats``.
    """
    state = State(script or Script())
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, HideScriptedDisconnects) for f in server_log.filters):
        server_log.addFilter(HideScriptedDisconnects())
    app = FastAPI(title="Scripted OpenAI-compatible backend", docs_url=None, redoc_url=None)
    app.state.scripted = state

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, str(exc.errors()))

    async def _read_json(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = json.loads(await request.body())
        except json.JSONDecodeError as exc:
            return error_response(400, f"request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return error_response(400, "request body must be a JSON object")
        state.last_requests.append({"path": request.url.path, "body": body})
        return body

    async def _generate(
        request: Request, kind: Literal["chat", "completions"]
    ) -> Response | StreamingResponse:
        state.requests[kind] += 1
        body = await _read_json(request)
        if isinstance(body, JSONResponse):
            return body
        parsed: GenerationRequest
        try:
            if kind == "chat":
                chat = ChatRequest.model_validate(body)
                users = [m.text() for m in chat.messages if m.role == "user"]
                last_user = users[-1] if users else ""
                everything = "\n".join(m.text() for m in chat.messages)
                parsed = chat
            else:
                completion = CompletionRequest.model_validate(body)
                prompt = completion.prompt
                last_user = everything = prompt if isinstance(prompt, str) else prompt[0]
                parsed = completion
        except ValidationError as exc:
            return error_response(400, str(exc))
        rule = state.choose(kind, last_user, everything)
        if rule.http_status is not None:
            return error_response(rule.http_status, rule.error_message, rule.error_type)
        constrained = constrain_to_choices(rule, parsed)
        if isinstance(constrained, str):
            return error_response(400, constrained)
        rule = constrained
        plan = plan_answer(rule, parsed, everything)
        model = parsed.model or state.script.model
        request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        if parsed.stream:
            include_usage = parsed.stream_options is not None and (
                parsed.stream_options.include_usage
            )
            return StreamingResponse(
                stream_answer(
                    state,
                    rule,
                    plan,
                    kind=kind,
                    request_id=request_id,
                    model=model,
                    include_usage=include_usage,
                ),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        if not await state.pass_barrier(rule):
            return error_response(500, barrier_message(rule))
        delay = rule.first_token_delay_s + rule.token_delay_s * max(len(plan.tokens) - 1, 0)
        if delay:
            await asyncio.sleep(delay)
        return complete(rule, plan, kind=kind, request_id=request_id, model=model)

    @app.get("/health")
    async def health() -> Response:
        state.requests["health"] += 1
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        state.requests["models"] += 1
        return {
            "object": "list",
            "data": [
                {
                    "id": state.script.model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "scripted",
                    "max_model_len": state.script.max_model_len,
                }
            ],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        return await _generate(request, "chat")

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return await _generate(request, "completions")

    @app.post("/tokenize", response_model=None)
    async def tokenize(request: Request) -> Response | dict[str, Any]:
        # vLLM's /tokenize shape, so callers can check prompt length against the context window.
        state.requests["tokenize"] += 1
        body = await _read_json(request)
        if isinstance(body, JSONResponse):
            return body
        if isinstance(body.get("prompt"), str):
            text = body["prompt"]
        elif isinstance(body.get("messages"), list):
            try:
                messages = [Message.model_validate(m) for m in body["messages"]]
            except ValidationError as exc:
                return error_response(400, str(exc))
            text = "\n".join(m.text() for m in messages)
        else:
            return error_response(400, "tokenize needs 'prompt' (string) or 'messages'")
        pieces = WORD_TOKENS.findall(text)
        return {
            "count": len(pieces),
            "max_model_len": state.script.max_model_len,
            "tokens": list(range(len(pieces))),
        }

    @app.put("/_script")
    async def put_script(new_script: Script) -> dict[str, Any]:
        state.replace_script(new_script)
        return new_script.model_dump()

    @app.get("/_script")
    async def get_script() -> dict[str, Any]:
        return state.script.model_dump()

    @app.get("/_stats")
    async def get_stats() -> dict[str, Any]:
        return state.stats()

    @app.delete("/_stats")
    async def reset_stats() -> Response:
        state.reset_stats()
        return Response(status_code=204)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the scripted backend under uvicorn (``python -m local.scripted_backend``)."""
    parser = argparse.ArgumentParser(prog="python -m local.scripted_backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--script", type=Path, help="JSON file holding a Script")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    script = Script.from_file(args.script) if args.script else Script()

    uvicorn.run(
        build_app(script),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()

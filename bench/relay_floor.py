"""The floor of bench/container.py: a minimal FastAPI + httpx relay of a backend's token stream.

It does only what the container protocol requires of a relay: take ``/invocations``, open the
backend's streamed completion, parse each SSE event and write one JSON line per token, then the
final object. No validation, templates, token counting or retrieval: what our server costs
beyond this is overhead of our own making.

Run: ``python bench/relay_floor.py --port P --backend-url URL --model NAME``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


def build_app(backend_url: str, model: str) -> FastAPI:
    """The floor relay app.

    Parameters
    ----------
    backend_url
        OpenAI-compatible backend.
    model
        Model name to send.

    Returns
    -------
    FastAPI
        ``POST /invocations`` (streaming only) and ``GET /ping``.
    """
    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        async with httpx.AsyncClient(base_url=backend_url, timeout=600, limits=limits) as client:
            state["client"] = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> Response:
        return JSONResponse({"status": "healthy"})

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        payload: dict[str, Any] = json.loads(await request.body())
        parameters = payload.get("parameters") or {}
        body = {
            "model": model,
            "prompt": payload["inputs"],
            "max_tokens": parameters.get("max_new_tokens", 64),
            "temperature": parameters.get("temperature", 0),
            "stream": True,
        }
        client = state["client"]
        response = await client.send(
            client.build_request("POST", "/v1/completions", json=body), stream=True
        )

        async def lines() -> AsyncIterator[bytes]:
            texts: list[str] = []
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or line.endswith("[DONE]"):
                        continue
                    event = json.loads(line[5:])
                    text = (event.get("choices") or [{}])[0].get("text") or ""
                    if text:
                        texts.append(text)
                        yield json.dumps({"token": {"text": text}}).encode() + b"\n"
            finally:
                await response.aclose()
            final = {"generated_text": "".join(texts), "details": {"finish_reason": "stop"}}
            yield json.dumps(final).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/jsonlines")

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the floor relay until stopped.

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-url", required=True)
    parser.add_argument("--model", default="scripted-model")
    args = parser.parse_args(argv)
    app = build_app(args.backend_url, args.model)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

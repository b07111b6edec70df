"""GPU benchmark backend: random-weight GPT-NeoX served seed-style or by continuous batching.

Why our own code: vLLM cannot be carried to the benchmark GPU, and transformers' own server
(`transformers serve`) speaks chat/responses, not the `/v1/completions` stream that our container
server calls. So this module wraps transformers' continuous-batching manager in a small
OpenAI-compatible `/v1/completions` endpoint, and keeps the seed's one-at-a-time
`generate()` + `TextIteratorStreamer` handler for comparison.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from transformers import (
    GenerationConfig,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedTokenizerFast,
    TextIteratorStreamer,
)

NEOX_20B_SHAPE: dict[str, Any] = {
    "hidden_size": 6144,
    "num_hidden_layers": 44,
    "num_attention_heads": 64,
    "intermediate_size": 24576,
    "vocab_size": 50432,
    "rotary_pct": 0.25,
    "max_position_embeddings": 2048,
}
"""GPT-NeoX-20B's published shape (the production chat model's architecture)."""

TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "vocab_size": 50432,
    "rotary_pct": 0.25,
    "max_position_embeddings": 2048,
}
"""A CPU-sized model of the same family and vocabulary, for the smoke run."""

# transformers' model and tokenizer classes are only partly typed (untyped __init__/eval/decode
# unions), so they travel as Any under mypy --strict.
CausalLM = Any
Tokenizer = Any

END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<unk>"


def build_random_model(shape: dict[str, Any], device: str, dtype: torch.dtype) -> CausalLM:
    """Create a GPT-NeoX model with random weights directly on ``device``.

    Parameters
    ----------
    shape
        Config keyword arguments (e.g. :data:`NEOX_20B_SHAPE`).
    device
        ``"cuda"`` or ``"cpu"``; parameters are allocated there, never copied.
    dtype
        Parameter dtype (bf16 on the GPU).

    Returns
    -------
    GPTNeoXForCausalLM
        The model in eval mode, SDPA attention, EOS disabled in its generation config.
    """
    config = GPTNeoXConfig(**shape, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        # Allocating on the device skips a 40 GB host round trip; the init kernels run there too.
        with torch.device(device):
            model: CausalLM = GPTNeoXForCausalLM(config)
    finally:
        torch.set_default_dtype(previous_dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def build_word_tokenizer(vocab_size: int, directory: Path) -> Tokenizer:
    """Build a whitespace word-level tokenizer covering ``vocab_size`` ids and save it.

    Every id decodes to a distinct word (``w<id>``), so random weights produce printable text,
    and decoding joins words with spaces the way a byte-level BPE emits ``Ġword`` tokens.

    Parameters
    ----------
    vocab_size
        Number of ids (the model's vocabulary size).
    directory
        Where ``save_pretrained`` writes it, so a server process can load it by path.

    Returns
    -------
    PreTrainedTokenizerFast
        The tokenizer, with ``<|endoftext|>`` as EOS/pad and ``<unk>`` for unknown words.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {END_OF_TEXT: 0, UNKNOWN: 1}
    vocab.update({f"w{i}": i for i in range(2, vocab_size)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer_class: Any = PreTrainedTokenizerFast
    tokenizer = tokenizer_class(
        tokenizer_object=core,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        unk_token=UNKNOWN,
        model_max_length=2048,
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<bot>:{% endif %}"
    )
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def fixed_prompt(length: int, vocab_size: int, seed: int = 0) -> str:
    """Return a deterministic prompt of exactly ``length`` words of the word tokenizer."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab_size, (length,), generator=generator).tolist()
    return " ".join(f"w{i}" for i in ids)


class SeedStyleEngine:
    """The seed's handler: one request at a time, ``generate()`` with a streamer thread.

    Parameters
    ----------
    model
        The model.
    tokenizer
        The tokenizer the streamer decodes with.
    """

    def __init__(self, model: CausalLM, tokenizer: Tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._one_at_a_time = asyncio.Lock()

    def _generate(self, prompt_ids: list[int], max_new_tokens: int, streamer: Any) -> None:
        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                # Fixed output length: timings must not depend on where random weights put EOS.
                min_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=streamer,
            )

    async def stream_text(self, prompt_ids: list[int], max_new_tokens: int) -> AsyncIterator[str]:
        """Yield the text pieces the seed's ``TextIteratorStreamer`` released, in order.

        Parameters
        ----------
        prompt_ids
            Prompt token ids.
        max_new_tokens
            Exact number of tokens to generate.

        Yields
        ------
        str
            Each non-empty piece of text, as the seed relayed it.
        """
        async with self._one_at_a_time:
            streamer = TextIteratorStreamer(
                self.tokenizer, skip_prompt=True, skip_special_tokens=True
            )
            loop = asyncio.get_running_loop()
            pieces: asyncio.Queue[str | None] = asyncio.Queue()

            def relay() -> None:
                for piece in streamer:
                    if piece:
                        loop.call_soon_threadsafe(pieces.put_nowait, piece)
                loop.call_soon_threadsafe(pieces.put_nowait, None)

            generator = threading.Thread(
                target=self._generate, args=(prompt_ids, max_new_tokens, streamer), daemon=True
            )
            reader = threading.Thread(target=relay, daemon=True)
            generator.start()
            reader.start()
            while (piece := await pieces.get()) is not None:
                yield piece
            await asyncio.to_thread(generator.join)


@dataclass
class ContinuousBatchingSettings:
    """How the continuous-batching manager is configured (recorded with the results)."""

    use_cuda_graph: bool | None = None
    use_async_batching: bool | None = None
    block_size: int = 256
    max_memory_percent: float = 0.6
    max_batch_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ContinuousBatchingEngine:
    """transformers' continuous-batching manager, streamed into asyncio.

    Parameters
    ----------
    model
        The model; the manager switches it to paged attention while it runs.
    settings
        Manager settings.
    workload
        ``(max_prompt_tokens, max_new_tokens, concurrent_requests)`` hints for cache sizing.
    """

    def __init__(
        self,
        model: CausalLM,
        settings: ContinuousBatchingSettings,
        workload: tuple[int, int, int],
    ) -> None:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        from transformers.generation.continuous_batching.utils import WorkloadHints

        cb_kwargs: dict[str, Any] = {
            "block_size": settings.block_size,
            "max_memory_percent": settings.max_memory_percent,
            "allow_block_sharing": False,
            **settings.extra,
        }
        if settings.use_cuda_graph is not None:
            cb_kwargs["use_cuda_graph"] = settings.use_cuda_graph
        if settings.use_async_batching is not None:
            cb_kwargs["use_async_batching"] = settings.use_async_batching
        if settings.max_batch_tokens is not None:
            cb_kwargs["max_batch_tokens"] = settings.max_batch_tokens
        config_class: Any = GenerationConfig
        generation_config = config_class(
            do_sample=False, eos_token_id=-1, pad_token_id=0, max_new_tokens=workload[1]
        )
        self.manager = model.init_continuous_batching(
            generation_config=generation_config,
            continuous_batching_config=ContinuousBatchingConfig(**cb_kwargs),
            workload_hints=WorkloadHints(
                max_prompt_length=workload[0],
                max_generated_length=workload[1],
                num_requests=workload[2],
            ),
        )
        self._ids = itertools.count()

    def start(self, warmup: bool) -> float:
        """Start the generation thread, capturing CUDA graphs first when ``warmup``.

        Returns
        -------
        float
            Seconds spent warming up.
        """
        started = time.perf_counter()
        if warmup:
            self.manager.warmup()
        warmup_s = time.perf_counter() - started
        self.manager.start()
        return warmup_s

    def resolved_config(self) -> dict[str, Any]:
        """Return the manager's resolved settings (CUDA graphs, async batching, cache sizes)."""
        config = self.manager.continuous_batching_config
        keys = (
            "use_cuda_graph",
            "use_async_batching",
            "block_size",
            "num_blocks",
            "max_batch_tokens",
            "max_requests_per_batch",
            "max_memory_percent",
        )
        resolved = {key: getattr(config, key, None) for key in keys}
        resolved["attn_implementation"] = self.manager.model.config._attn_implementation
        plain: dict[str, Any] = json.loads(json.dumps(resolved, default=str))
        return plain

    def stop(self) -> None:
        """Stop the generation thread and release the manager."""
        self.manager.stop(block=True, timeout=30)
        self.manager.destroy()

    async def stream(self, prompt_ids: list[int], max_new_tokens: int) -> AsyncIterator[list[int]]:
        """Yield each step's new token ids for one request.

        Parameters
        ----------
        prompt_ids
            Prompt token ids.
        max_new_tokens
            Exact number of tokens to generate (EOS is disabled).

        Yields
        ------
        list[int]
            The token ids produced since the previous yield.
        """
        request_id = f"bench-{next(self._ids)}"
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        # Register before adding, so the first token cannot reach the shared queue instead.
        self.manager.register_result_handler(request_id, outputs.put_nowait)
        self.manager.add_request(
            list(prompt_ids), request_id=request_id, max_new_tokens=max_new_tokens, streaming=True
        )
        sent = 0
        try:
            while True:
                output = await outputs.get()
                if output.error:
                    raise RuntimeError(f"generation failed: {output.error}")
                tokens = output.generated_tokens
                if len(tokens) > sent:
                    yield list(tokens[sent:])
                    sent = len(tokens)
                if output.is_finished():
                    return
        finally:
            if sent < max_new_tokens:
                self.manager.cancel_request(request_id)


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas, for any tokenizer.

    Decoding the whole sequence each time keeps word joins and multi-byte characters right;
    sequences here are a few hundred tokens, so the quadratic cost stays in microseconds.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self.text = ""

    def push(self, new_ids: list[int]) -> str:
        """Append ``new_ids`` and return the text they add."""
        self.token_ids.extend(new_ids)
        text = str(self.tokenizer.decode(self.token_ids, skip_special_tokens=True))
        if text.endswith("\ufffd"):
            # An incomplete multi-byte character: wait for the rest of it.
            return ""
        delta = text[len(self.text) :]
        self.text = text
        return delta


def _completion_chunk(
    completion_id: str, model_name: str, text: str, finish_reason: str | None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def _first_stop(text: str, stops: list[str]) -> int:
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return min(positions) if positions else -1


def build_backend_app(
    engine: ContinuousBatchingEngine,
    tokenizer: Tokenizer,
    model_name: str,
    max_new_tokens_cap: int = 2048,
) -> FastAPI:
    """Build the OpenAI-compatible ``/v1/completions`` app over the continuous-batching engine.

    Decoding is greedy whatever sampling parameters arrive: the benchmark compares engines on
    identical work, and with random weights the tokens carry no meaning.

    Parameters
    ----------
    engine
        A started continuous-batching engine.
    tokenizer
        Tokenizes prompts and detokenizes outputs.
    model_name
        Served model name (``/v1/models`` and the ``model`` field).
    max_new_tokens_cap
        Largest ``max_tokens`` accepted.

    Returns
    -------
    FastAPI
        The app (``GET /health``, ``GET /v1/models``, ``POST /v1/completions``).
    """
    app = FastAPI(title="bench-gpu-backend")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> JSONResponse | StreamingResponse:
        body = await request.json()
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(prompt, str) or not isinstance(max_tokens, int) or max_tokens < 1:
            return _invalid("prompt must be a string and max_tokens a positive integer")
        if max_tokens > max_new_tokens_cap:
            return _invalid(f"max_tokens must be at most {max_new_tokens_cap}")
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def pieces() -> AsyncIterator[tuple[str, int, str | None]]:
            detokenizer = IncrementalDetokenizer(tokenizer)
            emitted = 0
            generated = 0
            async for new_ids in engine.stream(prompt_ids, max_tokens):
                generated += len(new_ids)
                detokenizer.push(new_ids)
                cut = _first_stop(detokenizer.text, stops)
                if cut >= 0:
                    yield detokenizer.text[emitted:cut], generated, "stop"
                    return
                yield detokenizer.text[emitted:], generated, None
                emitted = len(detokenizer.text)
            yield "", generated, "length"

        if not body.get("stream"):
            text, generated, finish = "", 0, None
            async for piece, so_far, reason in pieces():
                text, generated, finish = text + piece, so_far, reason
            response = _completion_chunk(completion_id, model_name, text, finish)
            response["usage"] = _usage(len(prompt_ids), generated)
            return JSONResponse(response)

        async def events() -> AsyncIterator[bytes]:
            generated = 0
            async for piece, so_far, finish in pieces():
                generated = so_far
                if piece or finish:
                    yield _sse(_completion_chunk(completion_id, model_name, piece, finish))
            if include_usage:
                usage_chunk = _completion_chunk(completion_id, model_name, "", None)
                usage_chunk["choices"] = []
                usage_chunk["usage"] = _usage(len(prompt_ids), generated)
                yield _sse(usage_chunk)
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _invalid(message: str) -> JSONResponse:
    return JSONResponse(
        status_code=400,
        content={"error": {"message": message, "type": "invalid_request_error", "code": None}},
    )

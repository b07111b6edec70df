"""The role's resources (backend client, chat service or moderator) and how they are loaded."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from inference_server.artifacts import resolve_artifact
from inference_server.backend_client import BackendClient
from inference_server.generation import ChatService
from inference_server.moderation import Moderator
from inference_server.prompting import PromptBuilder
from inference_server.retrieval import (
    FaissRetriever,
    HttpSearchRetriever,
    Retriever,
    load_embedder,
)
from inference_server.settings import ServingSettings

__all__ = ["Services", "load_chat_service", "load_moderator", "load_role"]

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Per-process resources held in ``app.state.services``."""

    settings: ServingSettings
    backend: BackendClient
    chat: ChatService | None = None
    moderator: Moderator | None = None
    load_error: str | None = None
    backend_dead: bool = False

    @property
    def role_ready(self) -> bool:
        """Whether the role's resources (prompt, tokenizer, index) are loaded."""
        return self.chat is not None or self.moderator is not None


def _download_root() -> Path:
    return Path("/tmp/inference-server-downloads")  # noqa: S108 - per-container scratch space


def _load_retriever(settings: ServingSettings) -> Retriever | None:
    if settings.retriever == "none":
        return None
    if settings.retriever == "http":
        assert settings.search_api_url is not None
        return HttpSearchRetriever(
            settings.search_api_url,
            query_param=settings.search_api_query_param,
            results_path=settings.search_api_results_path,
            id_path=settings.search_api_id_path,
            title_path=settings.search_api_title_path,
            text_path=settings.search_api_text_path,
            score_path=settings.search_api_score_path,
            min_score=settings.retrieval_min_score,
        )
    index_dir = resolve_artifact(settings.resolve(settings.retrieval_index), _download_root())
    embedder = load_embedder(
        resolve_artifact(settings.resolve(settings.embedding_model), _download_root())
    )
    retriever = FaissRetriever(index_dir, embedder, min_score=settings.retrieval_min_score)
    logger.info("loaded %d passages from %s", len(retriever), index_dir)
    return retriever


def load_chat_service(settings: ServingSettings, backend: BackendClient) -> ChatService:
    """Load the tokenizer, prompt template and retriever (blocking; run in a thread).

    Parameters
    ----------
    settings
        Validated settings; ``tokenizer`` must name the tokenizer directory.
    backend
        The backend client the service calls.

    Returns
    -------
    ChatService
        The chat logic.
    """
    from transformers import AutoTokenizer

    if settings.tokenizer is None:
        raise ValueError("no tokenizer: set option.tokenizer or let the launcher resolve weights")
    tokenizer = AutoTokenizer.from_pretrained(
        str(resolve_artifact(settings.resolve(settings.tokenizer), _download_root()))
    )
    template = (
        settings.prompt_template
        if settings.prompt_template == "tokenizer"
        else settings.resolve(settings.prompt_template)
    )
    prompts = PromptBuilder.from_setting(tokenizer, template, system_prompt=settings.system_prompt)
    return ChatService(
        backend,
        prompts,
        _load_retriever(settings),
        max_model_len=settings.max_model_len,
        max_new_tokens_cap=settings.max_new_tokens_cap,
        default_max_new_tokens=settings.default_max_new_tokens,
        top_k=settings.retrieval_top_k,
        stop_words=settings.stop_words,
        vllm_extensions=settings.backend == "vllm" and settings.sampling_extensions,
    )


def load_moderator(settings: ServingSettings, backend: BackendClient) -> Moderator:
    """Load the few-shot moderation prompt.

    Parameters
    ----------
    settings
        Validated settings.
    backend
        The backend client.

    Returns
    -------
    Moderator
        The moderation logic.
    """
    prompt = Path(settings.resolve(settings.moderation_prompt)).read_text(encoding="utf-8")
    return Moderator(backend, prompt, choice=settings.moderation_uses_choice())


async def load_role(services: Services) -> None:
    """Load the role's resources in the background; a failure is kept in ``load_error``."""
    settings = services.settings
    try:
        if settings.role == "chat":
            services.chat = await asyncio.to_thread(load_chat_service, settings, services.backend)
        else:
            services.moderator = await asyncio.to_thread(load_moderator, settings, services.backend)
        # What is loaded now lives as long as the process: keep it out of every later
        # collection, so that the per-token garbage of many streams is collected cheaply.
        gc.collect()
        gc.freeze()
        logger.info("%s role ready", settings.role)
    except Exception as exc:
        logger.exception("loading the %s role failed", settings.role)
        services.load_error = f"{exc.__class__.__name__}: {exc}"

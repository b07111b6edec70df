"""SageMaker-contract inference server: chat with retrieval and moderation over an OpenAI backend."""

__all__: list[str] = []

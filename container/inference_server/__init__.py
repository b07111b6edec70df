"""SageMaker-contract inference server: chat with retrieval, and moderation, over OpenAI APIs."""

__all__: list[str] = []

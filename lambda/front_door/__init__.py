"""OpenAI-compatible streaming chat front door: FastAPI app served under the Lambda Web Adapter."""

__all__: list[str] = []

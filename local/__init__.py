"""Local-only servers: a scripted OpenAI-compatible backend and a SageMaker runtime emulator."""

__all__ = ["sagemaker_emulator", "scripted_backend"]

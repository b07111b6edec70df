"""The contracts between the chatbot's processes, defined once and imported by every side."""

from chatbot_contracts import metrics, training

__all__ = ["metrics", "training"]

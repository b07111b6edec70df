"""The contracts between the chatbot's processes, defined once and imported by every side.

Pydantic only: the container image, the Lambda image, the customization jobs and the CDK app
all import it. Each module is one seam:

- ``container``: the container protocol (requests, stream events, its error envelope);
- ``front_door``: the front door's public error envelope (OpenAI's);
- ``moderation``: the five labels;
- ``options``: the ``OPTION_*`` / ``CHATBOT_*`` variable names the CDK app sets;
- ``sessions``: the session table's key schema, index and TTL attribute;
- ``metrics``: the front door's metric namespace, names, units and dimensions;
- ``training``: what the customization pipeline and its jobs share (metric log lines, names).
"""

from chatbot_contracts import (
    container,
    front_door,
    metrics,
    moderation,
    options,
    sessions,
    training,
)

__all__ = ["container", "front_door", "metrics", "moderation", "options", "sessions", "training"]

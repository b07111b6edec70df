"""Resolves the calling principal from the API Gateway request context that LWA forwards."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from front_door.errors import MissingPrincipalError
from front_door.settings import Settings

REQUEST_CONTEXT_HEADER = "x-amzn-request-context"


def parse_request_context(headers: Mapping[str, str]) -> dict[str, Any]:
    """The API Gateway ``requestContext`` that the Lambda Web Adapter forwards as a header.

    Parameters
    ----------
    headers
        Request headers (case-insensitive mapping).

    Returns
    -------
    dict
        The decoded context, or ``{}`` when the header is absent or malformed.
    """
    raw = headers.get(REQUEST_CONTEXT_HEADER)
    if not raw:
        return {}
    try:
        context = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return context if isinstance(context, dict) else {}


def _nested_str(context: dict[str, Any], *path: str) -> str | None:
    node: Any = context
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, str) and node else None


def resolve_principal(settings: Settings, headers: Mapping[str, str]) -> str:
    """The principal that owns the caller's sessions.

    With IAM auth it is the caller's ARN (``requestContext.identity.userArn``); with Cognito
    it is the user pool ``sub`` claim (``requestContext.authorizer.claims.sub``, or
    ``authorizer.jwt.claims.sub`` from an HTTP API). The prefix keeps an ARN and a ``sub`` from
    ever colliding.

    Parameters
    ----------
    settings
        The auth mode.
    headers
        Request headers.

    Returns
    -------
    str
        ``iam:<arn>`` or ``cognito:<sub>``.

    Raises
    ------
    MissingPrincipalError
        When the context carries no authenticated identity.
    """
    context = parse_request_context(headers)
    if settings.auth_mode == "cognito":
        sub = _nested_str(context, "authorizer", "claims", "sub") or _nested_str(
            context, "authorizer", "jwt", "claims", "sub"
        )
        if sub:
            return f"cognito:{sub}"
    else:
        arn = _nested_str(context, "identity", "userArn")
        if arn:
            return f"iam:{arn}"
    raise MissingPrincipalError("No authenticated caller in the request context.")


def request_id(headers: Mapping[str, str]) -> str | None:
    """The API Gateway request id, when the request came through API Gateway.

    Parameters
    ----------
    headers
        Request headers.

    Returns
    -------
    str or None
        ``requestContext.requestId``.
    """
    return _nested_str(parse_request_context(headers), "requestId")

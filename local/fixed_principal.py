"""ASGI middleware that gives every local request one fixed, authenticated caller.

In AWS, API Gateway authenticates the caller and the Lambda Web Adapter forwards its
``requestContext`` in the ``x-amzn-request-context`` header, from which the front door reads the
principal. Locally there is no API Gateway, so this middleware writes that header the way API
Gateway would (an IAM identity and, for Cognito mode, a ``sub`` claim). The front door runs
unchanged and knows nothing of a local mode.
"""

from __future__ import annotations

import json
import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from front_door.principal import REQUEST_CONTEXT_HEADER

__all__ = ["DEFAULT_LOCAL_PRINCIPAL", "FixedPrincipal", "local_identity_arn"]

DEFAULT_LOCAL_PRINCIPAL = "local-user"
_LOCAL_ACCOUNT = "000000000000"
_HEADER = REQUEST_CONTEXT_HEADER.encode("latin-1")


def local_identity_arn(name: str) -> str:
    """The IAM user ARN a local caller named ``name`` appears as.

    Parameters
    ----------
    name
        The local user name.

    Returns
    -------
    str
        ``arn:aws:iam::000000000000:user/<name>`` (the account id moto uses too).
    """
    return f"arn:aws:iam::{_LOCAL_ACCOUNT}:user/{name}"


class FixedPrincipal:
    """Replace any request context with one naming the fixed local caller.

    Parameters
    ----------
    app
        The front-door app.
    name
        The local user name (``DEFAULT_LOCAL_PRINCIPAL`` by default).
    """

    def __init__(self, app: ASGIApp, *, name: str = DEFAULT_LOCAL_PRINCIPAL) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the request context header to HTTP requests, dropping one a client sent."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = {
            "requestId": str(uuid.uuid4()),
            "identity": {"userArn": local_identity_arn(self.name)},
            "authorizer": {"claims": {"sub": self.name}},
        }
        headers = [(key, value) for key, value in scope["headers"] if key.lower() != _HEADER]
        headers.append((_HEADER, json.dumps(context).encode()))
        await self.app({**scope, "headers": headers}, receive, send)

"""Let a synth's Python go on while jsii's node process starts and loads the assemblies.

jsii answers every request before Python may continue, including node's start-up greeting and
the ``load`` of each assembly (aws-cdk-lib, constructs, cdk-nag, ...) that ``import aws_cdk``
sends: ~0.3 s in which Python waits for node. Nothing in those answers is used (``load``
returns nothing; the greeting only carries the runtime's version), so :func:`pipeline` changes
jsii's process provider to write them and read their answers just before the next request
that needs one; node then starts and loads while Python imports ~37 MB of aws_cdk bytecode and
our stacks. Requests and answers stay in order on the same pipes; an error in a load (or a
runtime version mismatch in the greeting) is raised at that next request, as jsii raises it.

This reaches into jsii's process provider, which is not a public API: :func:`pipeline` changes
nothing (and returns False) unless jsii is the version it was written against, pinned in
``requirements/lock.txt``; ``tests/infra/test_synth_process.py`` fails when the pin moves, so
the change is re-read against the new jsii.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["JSII_VERSION", "pipeline"]

JSII_VERSION = "1.142.0"
_UNREAD = "_chatbot_unread_answers"
_PATCHED = "_chatbot_pipelined"


def pipeline() -> bool:
    """Patch jsii's process provider as the module docstring says; True when it was patched."""
    import jsii
    from jsii._kernel.providers import process as jsii_process
    from jsii.errors import ErrorType, JavaScriptError, JSIIError

    if jsii.__version__ != JSII_VERSION:
        return False
    node_process: Any = jsii_process._NodeProcess
    provider: Any = jsii_process.ProcessProvider
    if getattr(node_process, _PATCHED, False):
        return True
    read_greeting = node_process.handshake
    send_and_read = node_process.send

    def unread(process: Any) -> list[Callable[[], None]]:
        readers: list[Callable[[], None]] | None = process.__dict__.get(_UNREAD)
        if readers is None:
            readers = process.__dict__[_UNREAD] = []
        return readers

    def read_unread(process: Any) -> None:
        readers = unread(process)
        while readers:
            readers.pop(0)()

    def handshake_later(process: Any) -> None:
        unread(process).append(lambda: read_greeting(process))

    def read_load_answer(process: Any) -> None:
        answer = process._serializer.structure(
            process._next_message(), jsii_process._ProcessResponse
        )
        if isinstance(answer, jsii_process._ErrorResponse):
            # As jsii's own send() raises an error answer.
            cause = JavaScriptError(answer.stack)  # type: ignore[no-untyped-call]
            if answer.name == ErrorType.JSII_FAULT.value:
                raise JSIIError(answer.error) from cause
            raise RuntimeError(answer.error) from cause

    def load_without_waiting(self: Any, request: Any) -> Any:
        process = self._process
        data = json.dumps(process._serializer.unstructure(request), default=jsii_process.jdefault)
        process._process.stdin.write(data.encode("utf8") + b"\n")
        process._process.stdin.flush()
        unread(process).append(lambda: read_load_answer(process))
        return None

    def send_after_unread(process: Any, request: Any, response_type: Any) -> Any:
        read_unread(process)
        return send_and_read(process, request, response_type)

    node_process.handshake = handshake_later
    node_process.send = send_after_unread
    setattr(node_process, _PATCHED, True)
    provider.load = load_without_waiting
    return True

"""The ``python app.py`` process around a synth: set up before aws_cdk starts node, exit after.

A synth is a short-lived process that imports ~37 MB of aws_cdk bytecode, drives a node process
through jsii, and exits. Four costs of that process are not the app's own work (measured in
docs/infra.md, "The synth process"): node compiling the same 24 MB of JavaScript on every synth,
Python waiting while node starts and loads the assemblies, Python's cyclic garbage collector
walking the freshly imported modules again and again, and the interpreter freeing every one of
those objects at exit. :func:`prepare` and :func:`exit_now` remove them. This module imports
nothing from aws_cdk: :func:`prepare` must run before it is.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import NoReturn

from stacks import jsii_loads

__all__ = [
    "COMPILE_CACHE_PRELOAD",
    "configure_node",
    "default_compile_cache_dir",
    "exit_now",
    "prepare",
]

COMPILE_CACHE_PRELOAD = Path(__file__).with_name("node_compile_cache.js")


def default_compile_cache_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """``$XDG_CACHE_HOME/chatbot-cdk/node-compile-cache`` (``~/.cache`` without it).

    Per user and outside every checkout: the cache holds code node runs, so it must not sit
    where a commit could put files. ``None`` when there is no home directory to put it in.
    """
    base = Path(environ.get("XDG_CACHE_HOME") or "relative")
    if not base.is_absolute():  # unset, or relative, which the XDG spec says to ignore
        try:
            base = Path.home() / ".cache"
        except RuntimeError:  # Python 3.12+ without HOME or a passwd entry
            return None
        if not base.is_absolute():  # Python 3.11 leaves "~" as it is then
            return None
    return base / "chatbot-cdk" / "node-compile-cache"


def _node_option(flag: str, value: Path) -> str:
    # NODE_OPTIONS splits on spaces outside double quotes and unescapes backslashes in them.
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'{flag} "{escaped}"'


def configure_node(environ: MutableMapping[str, str]) -> None:
    """Give the node process jsii will start a code cache (``NODE_COMPILE_CACHE``).

    Node >= 22.1 honours the variable itself; on older Node the ``--require``d preload
    (:data:`COMPILE_CACHE_PRELOAD`) implements it for CommonJS. A ``NODE_COMPILE_CACHE`` already
    set wins (an empty one turns the cache off), and ``NODE_OPTIONS`` is extended, not replaced.
    """
    default = default_compile_cache_dir(environ)
    if default is not None:
        environ.setdefault("NODE_COMPILE_CACHE", str(default))
    preload = _node_option("--require", COMPILE_CACHE_PRELOAD)
    options = environ.get("NODE_OPTIONS", "")
    if preload not in options:
        environ["NODE_OPTIONS"] = f"{options} {preload}".strip()


def prepare() -> None:
    """Set this process up for one synth; call before anything imports aws_cdk.

    - Turns the cyclic garbage collector off: reference counting still frees everything not in
      a cycle, a synth's cycles are a few MB, and the process ends seconds later.
    - Configures the node process jsii starts (:func:`configure_node`).
    - Lets Python go on while node starts and loads the assemblies
      (:func:`stacks.jsii_loads.pipeline`).
    """
    if "aws_cdk" in sys.modules:
        raise RuntimeError("prepare() must run before aws_cdk is imported: jsii starts node then")
    gc.disable()
    configure_node(os.environ)
    jsii_loads.pipeline()


def exit_now(status: int) -> NoReturn:
    """Exit with ``status`` once the exit handlers ran, without tearing the interpreter down.

    The handlers include jsii's, which stops node and waits for it (node writes its code cache
    then). What is skipped is only freeing the interpreter's objects one by one, ~0.35 s after
    a synth; the cloud assembly is complete on disk before this is called.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

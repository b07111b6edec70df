"""Deterministic OpenAI-compatible server whose answers and faults follow a script.

``script`` holds the rules (what to answer, how fast, how to fail), ``wire`` the OpenAI request
and response shapes, ``app`` the FastAPI routes and the command line.
"""

from local.scripted_backend.app import build_app, main
from local.scripted_backend.script import Rule, Script, split_tokens

__all__ = ["Rule", "Script", "build_app", "main", "split_tokens"]

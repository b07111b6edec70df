"""The whole chatbot on one machine: honcho runs every part, then one line says it is ready."""

from local.stack.config import StackConfig, load_config
from local.stack.runner import READY_PREFIX, run_stack

__all__ = ["READY_PREFIX", "StackConfig", "load_config", "run_stack"]

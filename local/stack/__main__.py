"""`python -m local.stack`: run the local stack in the foreground (what `make local` runs)."""

import sys

from local.stack.config import load_config
from local.stack.runner import run_stack

if __name__ == "__main__":
    sys.exit(run_stack(load_config()))

"""`python -m local.stack`: run the local stack in the foreground (what `make local` runs)."""

import sys

from pydantic import ValidationError

from local.stack.config import load_config
from local.stack.runner import run_stack


def main() -> int:
    """Load the settings, run the stack; a bad setting exits 2 with a message naming it."""
    try:
        config = load_config()
    except ValidationError as exc:
        print(f"python -m local.stack: invalid settings\n{exc}", file=sys.stderr)
        return 2
    return run_stack(config)


if __name__ == "__main__":
    sys.exit(main())

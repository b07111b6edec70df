"""Entry point for ``python -m customize``."""

import sys

from customize.cli import main

sys.exit(main())

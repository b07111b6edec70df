"""Print docs/infra.md's idle-cost table for every environment of cdk.json (``make cost-table``)."""

from __future__ import annotations

import json
from pathlib import Path

from stacks.config import ENVIRONMENTS_CONTEXT_KEY, load_environment
from stacks.idle_cost import markdown_table

__all__ = ["main", "table"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def table(cdk_json: Path = REPO_ROOT / "cdk.json") -> str:
    """The Markdown table for the environments of ``cdk_json``, in file order.

    Parameters
    ----------
    cdk_json:
        The app's ``cdk.json``.

    Returns
    -------
    str
        The table.
    """
    context = json.loads(cdk_json.read_text())["context"]
    names = list(context[ENVIRONMENTS_CONTEXT_KEY])
    return markdown_table([load_environment(context, name) for name in names])


def main() -> None:
    """Print the table."""
    print(table())


if __name__ == "__main__":
    main()

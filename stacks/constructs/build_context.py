"""What never goes into a Docker build context: caches that tests and tools leave behind."""

__all__ = ["BUILD_CONTEXT_EXCLUDES"]

# Keeps image asset hashes (and so `cdk diff`) stable however often tests ran in the tree.
BUILD_CONTEXT_EXCLUDES = [
    "**/__pycache__",
    "**/*.pyc",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
    "**/.hypothesis",
    "**/*.egg-info",
]

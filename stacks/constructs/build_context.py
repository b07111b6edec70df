"""Docker build contexts: the repository root, sending only the packages an image needs."""

__all__ = ["BUILD_CONTEXT_EXCLUDES", "CONTRACTS_DIR", "repository_context_excludes"]

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

CONTRACTS_DIR = "contracts"
"""The contracts package, which every image installs beside its own package."""


def repository_context_excludes(*paths: str) -> list[str]:
    """Excludes (Docker ignore syntax) for a repository-root context holding only ``paths``.

    Every image is built from the repository root so that it can install the contracts package
    beside its own; everything else stays out of the context and out of the asset hash.

    Parameters
    ----------
    *paths
        Paths relative to the repository root the Dockerfile copies (its package directory,
        pinned requirement files); the contracts package is always included.

    Returns
    -------
    list[str]
        The ``exclude`` list for a ``DockerImageAsset`` with ``IgnoreMode.DOCKER``.
    """
    included = [f"!{path}" for path in (CONTRACTS_DIR, *paths)]
    return ["*", *included, *BUILD_CONTEXT_EXCLUDES]

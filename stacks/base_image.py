"""Resolves the inference container's base image from the `sagemaker` SDK's image-URI catalog.

The SDK's own ``image_uris.retrieve`` needs ~6 s of imports, more than the whole rest of a
synth; the catalog is plain JSON shipped inside the pinned SDK, so this module reads it
directly with the SDK's tag format, and a test holds the result equal to ``retrieve``.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from stacks.config import BaseImageConfig

__all__ = ["DEFAULT_LOOKUP_REGION", "resolve_base_image"]

# An environment-agnostic environment has no region; its DLC lookup uses this one unless the
# config names `lookup_region`. Deploying elsewhere needs that region's URI (same account).
DEFAULT_LOOKUP_REGION = "us-east-1"


@cache
def _catalog(framework: str) -> dict[str, Any]:
    spec = importlib.util.find_spec("sagemaker")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the sagemaker SDK is not installed (requirements/infra.txt)")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    data: dict[str, Any] = json.loads(
        (package_dir / "core" / "image_uri_config" / f"{framework}.json").read_text()
    )
    # Some catalogs nest their versions under the image scope.
    return data if "versions" in data else data["inference"]


def _ecr_hostname(region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"ecr.{region}.{suffix}"


def resolve_base_image(config: BaseImageConfig, region: str | None) -> str:
    """Return the base image URI for ``config`` in ``region``.

    Parameters
    ----------
    config:
        A pinned ``uri``, or a DLC ``framework``/``version`` to look up offline.
    region:
        The environment's region; ``None`` for an environment-agnostic environment, which then
        uses ``config.lookup_region`` or :data:`DEFAULT_LOOKUP_REGION`.

    Returns
    -------
    str
        A literal image URI (Docker build args cannot carry CloudFormation tokens).

    Raises
    ------
    ValueError
        If the SDK's catalog does not know the version or the region.
    """
    if config.uri is not None:
        return config.uri
    assert config.framework is not None
    assert config.version is not None
    lookup_region = region or config.lookup_region or DEFAULT_LOOKUP_REGION
    catalog = _catalog(config.framework)
    version = catalog.get("version_aliases", {}).get(config.version, config.version)
    try:
        entry = catalog["versions"][version]
    except KeyError:
        known = ", ".join(catalog["versions"])
        raise ValueError(
            f"base_image.version: the sagemaker SDK's catalog has no {config.framework} "
            f"{config.version} (known: {known}); pin base_image.uri instead"
        ) from None
    try:
        registry = entry["registries"][lookup_region]
    except KeyError:
        raise ValueError(
            f"base_image: no {config.framework} {version} image in region {lookup_region}"
        ) from None
    processor = "gpu" if "processors" in catalog else None
    py_version = entry["py_versions"][0] if entry.get("py_versions") else None
    container_version = (entry.get("container_version") or {}).get("gpu")
    tag = "-".join(
        part for part in (entry["tag_prefix"], processor, py_version, container_version) if part
    )
    return f"{registry}.dkr.{_ecr_hostname(lookup_region)}/{entry['repository']}:{tag}"

"""Synth-time check: artifacts of network-isolated endpoints may not need the network."""

from __future__ import annotations

from pathlib import Path

from stacks.config import ConfigError

__all__ = ["NETWORK_SCHEMES", "artifact_options", "refuse_network_dependencies"]

NETWORK_SCHEMES = ("s3://", "http://", "https://")
# Retrievers that call a service at request time.
_NETWORK_RETRIEVERS = frozenset({"http"})
# Set by the CDK app on the Model (the weights are /opt/ml/model), whatever the file says.
_SET_BY_THE_APP = frozenset({"model_id"})


def artifact_options(path: Path) -> dict[str, str]:
    """The ``option.<key>=<value>`` lines of a serving.properties file, keys lower-cased.

    The CDK app may not import the container package (import-linter), so it reads the LMI
    format itself; a test checks that it reads the shipped files as the container does.

    Parameters
    ----------
    path:
        The file.

    Returns
    -------
    dict[str, str]
        Option keys without the ``option.`` prefix, mapped to their values.
    """
    options: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        key, sep, value = line.partition("=")
        if line.startswith(("#", "!")) or not sep:
            continue
        if key.strip().lower().startswith("option."):
            options[key.strip()[len("option.") :].lower()] = value.strip()
    return options


def refuse_network_dependencies(env_name: str, artifacts_dir: Path, roles: tuple[str, ...]) -> None:
    """Refuse artifacts that would fetch anything at run time, before an isolated deploy.

    A network-isolated container reaches nothing: a retriever that calls a search API, or
    an index, embedding model or template named by URL, would fail on the endpoint, long
    after ``cdk deploy`` succeeded; synth fails instead, naming the file and the option.

    Parameters
    ----------
    env_name:
        Environment name, for the message.
    artifacts_dir:
        ``model_artifacts/``.
    roles:
        The roles whose ``<role>/serving.properties`` to check.

    Raises
    ------
    ConfigError
        Naming ``model_artifacts/<role>/serving.properties: option.<key>``.
    """
    for role in roles:
        path = artifacts_dir / role / "serving.properties"
        where = f"environment {env_name!r}: network: {artifacts_dir.name}/{role}/serving.properties"
        options = artifact_options(path)
        retriever = options.get("retriever", "faiss")
        if retriever in _NETWORK_RETRIEVERS:
            raise ConfigError(
                f"{where}: option.retriever={retriever} calls a service at request time, "
                "which network isolation forbids; ship a faiss index with the artifacts "
                "or remove the environment's network section"
            )
        for key, value in sorted(options.items()):
            if key not in _SET_BY_THE_APP and value.startswith(NETWORK_SCHEMES):
                raise ConfigError(
                    f"{where}: option.{key}={value} would be fetched at run time, which "
                    "network isolation forbids; ship it with the artifacts"
                )

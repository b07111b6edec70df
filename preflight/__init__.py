"""Checks that catch deploy failures before ``cdk deploy``: account, images, engine flags, diff."""

from __future__ import annotations

__all__: list[str] = []

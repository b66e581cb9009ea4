"""What build is running: the package version and the versions that matter on the wire
(``hedui --version``, the ``hedui_build_info`` metric)."""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["build_info"]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_info() -> dict[str, str]:
    return {"version": _version("hedui"), "python": platform.python_version(), "grpc": _version("grpcio")}

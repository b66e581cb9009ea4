"""Typed errors of the data adapters: a bad mapping, a mapping that does not fit the real
source, an invalid identity number.

Subclasses of the families in :mod:`hedui.common.errors` (``hedui.node.errors`` maps them to
gRPC statuses). Messages name the mapping key, the row locator or the problem, never an
identity number or any run of its digits.
"""

from __future__ import annotations

from hedui.common.errors import ConfigError, InvalidArgument, Reason

__all__ = ["MappingError", "SourceError", "InvalidIdentity"]


class MappingError(ConfigError):
    """A mapping file is malformed: unknown or missing keys, wrong types, bad references."""


class SourceError(ConfigError):
    """A mapping does not fit the real source (a table, column, sheet, header or file is
    missing or unreadable), found by ``check()`` before any row is read."""


class InvalidIdentity(InvalidArgument):
    """An identity number failed validation. The message never contains the input."""

    default_reason = Reason.INVALID_IDENTITY

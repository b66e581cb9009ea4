"""Where the hub refers a lead: the routing table of its discovery file.

Routing table (in the hub config, TOML)::

    [[routes]]
    region = "370304001"      # region-code prefix; "" matches every region
    event_type = "*"          # an event type, or "*" for any
    assignee = "370304001"    # town or department code
    assignee_kind = "town"    # town | department
    name = "城东街道"          # display name (optional)

The most specific route wins: an exact event type before ``*``, then the longest region
prefix. One route with ``region = ""`` and ``event_type = "*"`` is required (the catch-all).

The routes live in the hub's discovery file (:class:`HubFile`, read by
:meth:`hedui.node.discovery.hub.Hub.from_config` through :func:`hedui.common.toml.load_toml`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from hedui.node.errors import ConfigError

__all__ = ["Route", "Routing", "HubFile", "CODE_PATTERN"]

#: A member, town, department or staff code.
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_CODE = CODE_PATTERN


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    region: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{0,32}$")] = ""
    event_type: Annotated[str, Field(pattern=r"^(\*|[a-z][a-z0-9_.-]{0,63})$")] = "*"
    assignee: Annotated[str, Field(pattern=_CODE)]
    assignee_kind: Literal["town", "department"]
    name: Annotated[str, Field(max_length=100)] = ""


class Routing:
    """Chooses the town or department a lead is referred to."""

    def __init__(self, routes: Sequence[Route]) -> None:
        seen: set[tuple[str, str]] = set()
        for r in routes:
            key = (r.region, r.event_type)
            if key in seen:
                raise ConfigError(
                    f"routes: got region {r.region!r} with event_type {r.event_type!r} twice, want each pair once"
                )
            seen.add(key)
        if ("", "*") not in seen:
            raise ConfigError('routes: got no catch-all route, want one with region = "" and event_type = "*"')
        # Most specific first: exact event type, then longer region prefix.
        self._routes = sorted(routes, key=lambda r: (r.event_type == "*", -len(r.region)))
        self.names = {r.assignee: (r.name or r.assignee) for r in routes}
        self.kinds = {r.assignee: r.assignee_kind for r in routes}

    def route(self, region: str, event_type: str) -> Route:
        for r in self._routes:
            if region.startswith(r.region) and r.event_type in ("*", event_type):
                return r
        raise AssertionError("unreachable: the catch-all route matches everything")  # pragma: no cover


class HubFile(BaseModel):
    """The hub's discovery file as written (see :meth:`Hub.from_config`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    hub: Annotated[str, Field(pattern=_CODE, description="the hub's member code")]
    person_secret_file: Annotated[str, Field(min_length=1, description="a file path")]
    sealing_public_file: Annotated[str, Field(min_length=1, description="a file path")] | None = None
    calendar_overrides: Annotated[str, Field(min_length=1, description="a file path")] | None = None
    referral_workdays: int = 5
    routes: Annotated[list[Route], Field(min_length=1)]

"""The one way the node renders HTML: Jinja2 templates from ``node/templates`` with every
value escaped (no f-string HTML anywhere, so nothing a department or caseworker typed can
become markup)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from hedui.common.clock import DEFAULT_ZONE, fmt_instant, zone

__all__ = ["render"]


def _instant(value: Any, time_zone: str = "") -> str:
    """An instant as a person reads it: local time in the federation zone with the zone shown,
    no microseconds (docs/time.md). Takes a datetime or an ISO string; '' for none."""
    if value is None or value == "":
        return ""
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return fmt_instant(t, zone(time_zone or DEFAULT_ZONE))


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("hedui.node", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["instant"] = _instant
    return env


def render(template: str, **context: Any) -> str:
    """``templates/<template>`` rendered with ``context`` (autoescaped)."""
    return _env().get_template(template).render(**context)

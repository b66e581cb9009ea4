"""The one way the node renders HTML: Jinja2 templates from ``node/templates`` with every
value escaped (no f-string HTML anywhere, so nothing a department or caseworker typed can
become markup)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

__all__ = ["render"]


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("hedui.node", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )


def render(template: str, **context: Any) -> str:
    """``templates/<template>`` rendered with ``context`` (autoescaped)."""
    return _env().get_template(template).render(**context)

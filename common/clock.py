"""One clock for the whole federation (DESIGN.md "Time").

Instants are aware UTC ``datetime`` values; every *local* date — income windows, report
months, working-day deadlines, case-reference years, what a person reads — is the date in the
federation's time zone (the signed directory names it; default ``Asia/Shanghai``, China
Standard Time, UTC+8, no daylight saving since 1991).

:class:`SystemClock` is the only code in Hedui that reads the wall clock. Everything else is
handed a :class:`Clock`, so tests and ``--as-of`` can fix the date.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DEFAULT_ZONE",
    "Clock",
    "SystemClock",
    "FixedClock",
    "ClockError",
    "zone",
    "utc",
    "local_date",
    "fmt_instant",
    "fmt_date",
    "parse_as_of",
]

#: Every rule in the source documents is in China Standard Time (domain.md "Time zone").
DEFAULT_ZONE = "Asia/Shanghai"

_UTC = dt.UTC


class ClockError(ValueError):
    """A bad zone name or ``--as-of`` value; the message reads ``field: got X, want Y``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def zone(name: str = DEFAULT_ZONE) -> ZoneInfo:
    """The IANA zone ``name``; an empty name means the default zone."""
    name = name or DEFAULT_ZONE
    if len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name):
        raise ClockError(f"time_zone: got {name[:64]!r}, want an IANA zone such as {DEFAULT_ZONE}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ClockError(f"time_zone: got {name!r}, want an IANA zone such as {DEFAULT_ZONE}") from None


def utc(t: dt.datetime) -> dt.datetime:
    """``t`` as aware UTC. A naive value is taken to be UTC already (how the stores return it)."""
    if t.tzinfo is None:
        return t.replace(tzinfo=_UTC)
    return t.astimezone(_UTC)


def local_date(t: dt.datetime, tz: ZoneInfo) -> dt.date:
    """The local date in ``tz`` of the instant ``t``."""
    return utc(t).astimezone(tz).date()


def _offset(t: dt.datetime) -> str:
    off = t.utcoffset() or dt.timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"UTC{sign}{h}" + (f":{m:02d}" if m else "")


def fmt_instant(t: dt.datetime | None, tz: ZoneInfo, *, seconds: bool = False) -> str:
    """What a person reads: ``2026-12-01 02:40 (UTC+8)`` — local time, zone shown, never
    microseconds. ``None`` reads as an empty string."""
    if t is None:
        return ""
    loc = utc(t).astimezone(tz)
    return loc.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + f" ({_offset(loc)})"


def fmt_date(d: dt.date | None) -> str:
    return "" if d is None else d.isoformat()


@runtime_checkable
class Clock(Protocol):
    """What every component that needs the time is given."""

    @property
    def zone(self) -> ZoneInfo: ...

    def now(self) -> dt.datetime:
        """The current instant, aware UTC."""
        ...

    def today(self) -> dt.date:
        """The current local date in the federation zone."""
        ...


class SystemClock:
    """The wall clock. The only place in Hedui that reads it."""

    def __init__(self, tz: ZoneInfo | str = DEFAULT_ZONE) -> None:
        self._zone = tz if isinstance(tz, ZoneInfo) else zone(tz)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def now(self) -> dt.datetime:
        return dt.datetime.now(_UTC)

    def today(self) -> dt.date:
        return local_date(self.now(), self._zone)

    def __repr__(self) -> str:
        return f"SystemClock({self._zone.key!r})"


class FixedClock:
    """A clock that stands still until moved: for tests and for ``--as-of``."""

    def __init__(self, instant: dt.datetime, tz: ZoneInfo | str = DEFAULT_ZONE) -> None:
        self._zone = tz if isinstance(tz, ZoneInfo) else zone(tz)
        self._now = utc(instant)
        self._lock = threading.Lock()

    @classmethod
    def at_local(cls, d: dt.date, hour: int = 12, minute: int = 0, tz: ZoneInfo | str = DEFAULT_ZONE) -> FixedClock:
        """A clock at ``hour:minute`` local time on local date ``d``."""
        z = tz if isinstance(tz, ZoneInfo) else zone(tz)
        return cls(dt.datetime(d.year, d.month, d.day, hour, minute, tzinfo=z), z)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def today(self) -> dt.date:
        return local_date(self.now(), self._zone)

    def set(self, instant: dt.datetime) -> None:
        with self._lock:
            self._now = utc(instant)

    def advance(self, delta: dt.timedelta) -> None:
        with self._lock:
            self._now = self._now + delta

    def __repr__(self) -> str:
        return f"FixedClock({self._now.isoformat()!r}, {self._zone.key!r})"


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)


def parse_as_of(text: str, tz: ZoneInfo, *, field: str = "--as-of") -> dt.datetime:
    """``--as-of`` as an aware UTC instant.

    A date (``2026-12-01``) means the *end* of that local day (23:59:59 local): acting
    "as of" a day takes in everything that happened on it. An instant needs an explicit
    offset (``2026-11-30T18:40Z``, ``2026-12-01T02:40+08:00``); a naive one is refused
    because it would be read in the wrong zone on some machine.
    """
    t = text.strip()
    if _DATE.match(t):
        try:
            d = dt.date.fromisoformat(t)
        except ValueError:
            raise ClockError(f"{field}: got {t[:32]!r}, want a real date YYYY-MM-DD") from None
        return utc(dt.datetime(d.year, d.month, d.day, 23, 59, 59, tzinfo=tz))
    try:
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ClockError(f"{field}: got {t[:32]!r}, want a date YYYY-MM-DD or an instant such as 2026-12-01T02:40+08:00") from None
    if when.tzinfo is None:
        raise ClockError(f"{field}: got an instant without a UTC offset, want one such as 2026-12-01T02:40+08:00")
    return utc(when)

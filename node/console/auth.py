"""Operators, roles, sessions and sign-in for the console.

- Operators live in a users file (TOML, or JSON by suffix) next to the hub config, written only
  by ``hedui console users …``: name, display name, role, argon2id hash, disabled flag.
- Roles: caseworker (经办), reviewer (复核), supervisor (科长/主任); :data:`PERMISSIONS` is the
  one table of who may do what.
- Sessions are server-side rows (:mod:`hedui.node.console.tables`): a random id in the cookie,
  its SHA-256 in the store, a per-session CSRF token, an idle timeout and an absolute lifetime,
  all judged with the console's :class:`~hedui.common.clock.Clock`.
- Sign-in: a known operator is locked for ``lock_minutes`` after ``max_failures`` consecutive
  failures; every client address may try ``per_minute`` times a minute; unknown names cost the
  same argon2 work as known ones. Failures are audited (``console.signin_failed``) by
  :meth:`SignIn.attempt` itself; a typed name is recorded only if it is an operator's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import threading
import tomllib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, insert, select, update

from hedui.common.clock import Clock, utc
from hedui.node.console.tables import console_sessions, console_signin_state
from hedui.node.errors import ConfigError, InvalidArgument

__all__ = ["ROLES", "PERMISSIONS", "User", "UserStore", "Session", "SessionStore", "SignIn", "SignInResult",
           "may", "check_password_policy", "NAME_RE"]

ROLES = ("caseworker", "reviewer", "supervisor")
_ALL = frozenset(ROLES)
_WORKERS = frozenset({"caseworker", "supervisor"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "case.view": _ALL,
    "case.open": _WORKERS,
    "case.run": _WORKERS,
    "case.review": frozenset({"reviewer", "supervisor"}),
    "identity.show": _WORKERS,  # full identity numbers, on request, audited
    "lead.view": _ALL,
    "lead.details": _WORKERS,  # open sealed details, with a reason, audited
    "referral.respond": _WORKERS,
    "referral.escalate": frozenset({"supervisor"}),
    "report.monthly": _ALL,
    "crosscheck.view": _ALL,  # runs and their hits (masked), audited
    "crosscheck.run": frozenset({"supervisor"}),  # orders a check of a whole population
}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HASHER = PasswordHasher()  # argon2id, RFC 9106 second recommended parameters (64 MiB, t=3)


def may(role: str, permission: str) -> bool:
    return role in PERMISSIONS.get(permission, frozenset())


def check_password_policy(password: str) -> None:
    if not 10 <= len(password) <= 256:
        raise InvalidArgument(f"password: got {len(password)} characters, want 10..256")
    classes = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))
    if classes < 3:
        raise InvalidArgument("password: got fewer than 3 kinds of character, want 3 of lower, upper, digit, symbol")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str
    display_name: str = ""
    disabled: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "display_name": self.display_name, "role": self.role,
                "disabled": self.disabled, "password_hash": self.password_hash}


class UserStore:
    """The users file. Re-read when it changes on disk, so CLI edits apply to a running console."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}

    def _parse(self, text: str) -> dict[str, User]:
        where = f"users file {self.path}"
        try:
            doc = json.loads(text) if self.path.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{where}: got unreadable content ({str(exc)[:80]}), want TOML or JSON") from None
        raw = doc.get("users", []) if isinstance(doc, dict) else None
        if not isinstance(raw, list):
            raise ConfigError(f"{where}: users: got {type(raw).__name__}, want a list of [[users]] tables")
        out: dict[str, User] = {}
        for i, u in enumerate(raw):
            at = f"{where}: users[{i}]"
            if not isinstance(u, dict) or set(u) - {"name", "display_name", "role", "password_hash", "disabled"}:
                raise ConfigError(f"{at}: got unknown keys, want name, display_name, role, password_hash, disabled")
            name, role, h = u.get("name"), u.get("role"), u.get("password_hash")
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                raise ConfigError(f"{at}.name: got {str(name)[:20]!r}, want a staff code like cw01")
            if role not in ROLES:
                raise ConfigError(f"{at}.role: got {str(role)[:20]!r}, want one of {', '.join(ROLES)}")
            if not isinstance(h, str) or not h.startswith("$argon2"):
                raise ConfigError(f"{at}.password_hash: got no argon2 hash, want one set by `hedui console users passwd`")
            if name in out:
                raise ConfigError(f"{at}.name: got {name!r} twice, want each operator once")
            out[name] = User(name, role, h, str(u.get("display_name", ""))[:32], bool(u.get("disabled", False)))
        return out

    def users(self) -> dict[str, User]:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._users, self._stamp = {}, None
                return {}
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._users = self._parse(self.path.read_text(encoding="utf-8"))
                self._stamp = stamp
            return dict(self._users)

    def get(self, name: str) -> User | None:
        return self.users().get(name)

    def save(self, users: dict[str, User]) -> None:
        """Writes the whole file atomically, readable by its owner only."""
        rows = [u.as_dict() for u in sorted(users.values(), key=lambda u: u.name)]
        text = json.dumps({"users": rows}, ensure_ascii=False, indent=1) if self.path.suffix == ".json" \
            else tomli_w.dumps({"users": rows})
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def set_user(self, name: str, *, role: str | None = None, password: str | None = None,
                 display_name: str | None = None, disabled: bool | None = None, create: bool = False) -> User:
        users = self.users()
        cur = users.get(name)
        if create and cur is not None:
            raise InvalidArgument(f"name: got {name!r}, which exists, want a new operator (or use passwd/enable)")
        if not create and cur is None:
            raise InvalidArgument(f"name: got {name!r}, want an existing operator")
        if not NAME_RE.fullmatch(name):
            raise InvalidArgument(f"name: got {name[:20]!r}, want a staff code like cw01 (letters, digits, _ . -)")
        if role is not None and role not in ROLES:
            raise InvalidArgument(f"role: got {role[:20]!r}, want one of {', '.join(ROLES)}")
        if password is not None:
            check_password_policy(password)
        if create and (role is None or password is None):
            raise InvalidArgument("a new operator needs a role and a password")
        base = cur or User(name, role or "caseworker", "")
        new = User(
            name=name, role=role or base.role,
            password_hash=_HASHER.hash(password) if password is not None else base.password_hash,
            display_name=(display_name if display_name is not None else base.display_name)[:32],
            disabled=base.disabled if disabled is None else disabled,
        )
        users[name] = new
        self.save(users)
        return new


@dataclass(frozen=True)
class Session:
    operator: str
    csrf: str
    created_at: dt.datetime
    last_seen_at: dt.datetime


def _digest(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()


class SessionStore:
    def __init__(self, engine, clock: Clock, *, idle: dt.timedelta, lifetime: dt.timedelta) -> None:
        self.engine, self.clock, self.idle, self.lifetime = engine, clock, idle, lifetime

    def create(self, operator: str) -> tuple[str, Session]:
        cookie, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock.now()
        with self.engine.begin() as c:
            c.execute(insert(console_sessions).values(session_hash=_digest(cookie), operator=operator, csrf=csrf,
                                                      created_at=now, last_seen_at=now))
        return cookie, Session(operator, csrf, now, now)

    def get(self, cookie: str | None) -> tuple[Session | None, str]:
        """The live session for a cookie, or ``(None, why)`` with why ``none`` or ``expired``."""
        if not cookie or len(cookie) > 100:
            return None, "none"
        key, now = _digest(cookie), self.clock.now()
        with self.engine.connect() as c:
            row = c.execute(select(console_sessions).where(console_sessions.c.session_hash == key)).first()
        if row is None:
            return None, "none"
        seen, born = utc(row.last_seen_at), utc(row.created_at)
        if now - seen > self.idle or now - born > self.lifetime:
            self.delete(cookie)
            return None, "expired"
        if now - seen > dt.timedelta(seconds=15):  # one write per quarter minute, not per request
            with self.engine.begin() as c:
                c.execute(update(console_sessions).where(console_sessions.c.session_hash == key).values(last_seen_at=now))
        return Session(row.operator, row.csrf, born, now), ""

    def delete(self, cookie: str) -> None:
        with self.engine.begin() as c:
            c.execute(delete(console_sessions).where(console_sessions.c.session_hash == _digest(cookie)))

    def delete_for(self, operator: str) -> int:
        with self.engine.begin() as c:
            return c.execute(delete(console_sessions).where(console_sessions.c.operator == operator)).rowcount


@dataclass(frozen=True)
class SignInResult:
    ok: bool
    outcome: str  # OK | BAD_CREDENTIALS | LOCKED | LOCKED_OUT | DISABLED | RATE_LIMITED
    cookie: str = ""
    session: Session | None = None
    locked_until: dt.datetime | None = None


class SignIn:
    def __init__(self, users: UserStore, sessions: SessionStore, audit, clock: Clock, *, max_failures: int = 5,
                 lock_minutes: int = 15, per_minute: int = 10) -> None:
        self.users, self.sessions, self.audit, self.clock = users, sessions, audit, clock
        self.max_failures, self.lock = max_failures, dt.timedelta(minutes=lock_minutes)
        self.per_minute = per_minute
        self._tries: dict[str, deque] = {}
        self._limited: set[str] = set()
        self._mu = threading.Lock()
        self._dummy = _HASHER.hash(secrets.token_urlsafe(16))

    def _rate(self, client: str) -> tuple[bool, bool]:
        """(allowed, first refusal of this burst): a burst is audited once, not per request."""
        now = self.clock.now()
        with self._mu:
            if len(self._tries) > 10_000:
                self._tries = {k: q for k, q in self._tries.items() if q and now - q[-1] <= dt.timedelta(minutes=1)}
            q = self._tries.setdefault(client, deque())
            while q and now - q[0] > dt.timedelta(minutes=1):
                q.popleft()
            if len(q) >= self.per_minute:
                first = client not in self._limited
                self._limited.add(client)
                return False, first
            self._limited.discard(client)
            q.append(now)
            return True, False

    def attempt(self, name: str, password: str, client: str) -> SignInResult:
        allowed, first = self._rate(client)
        if not allowed:
            if first:
                self._audit("", "RATE_LIMITED", client)
            return SignInResult(False, "RATE_LIMITED")
        user = self.users.get(name) if NAME_RE.fullmatch(name or "") else None
        now = self.clock.now()
        if user is None:
            _verify(self._dummy, password)  # the same work as for a real operator
            self._audit("", "BAD_CREDENTIALS", client)
            return SignInResult(False, "BAD_CREDENTIALS")
        state = self._state(user.name)
        if state is not None and state.locked_until is not None and utc(state.locked_until) > now:
            self._audit(user.name, "LOCKED", client)
            return SignInResult(False, "LOCKED", locked_until=utc(state.locked_until))
        good = _verify(user.password_hash, password)
        if good and user.disabled:
            self._audit(user.name, "DISABLED", client)
            return SignInResult(False, "DISABLED")
        if not good:
            failures = (state.failures if state is not None and state.locked_until is None else 0) + 1
            locked = now + self.lock if failures >= self.max_failures else None
            self._set_state(user.name, failures if locked is None else 0, locked, exists=state is not None)
            outcome = "LOCKED_OUT" if locked else "BAD_CREDENTIALS"
            self._audit(user.name, outcome, client)
            return SignInResult(False, outcome, locked_until=locked)
        if state is not None:
            self._set_state(user.name, 0, None, exists=True)
        cookie, session = self.sessions.create(user.name)
        self.audit.record("console.signin", {"operator": user.name, "client": client})
        return SignInResult(True, "OK", cookie, session)

    def _audit(self, operator: str, outcome: str, client: str) -> None:
        self.audit.record("console.signin_failed", {"operator": operator, "outcome": outcome, "client": client})

    def _state(self, operator: str):
        with self.sessions.engine.connect() as c:
            return c.execute(select(console_signin_state).where(console_signin_state.c.operator == operator)).first()

    def _set_state(self, operator: str, failures: int, locked: dt.datetime | None, *, exists: bool) -> None:
        vals = {"failures": failures, "locked_until": locked, "updated_at": self.clock.now()}
        with self.sessions.engine.begin() as c:
            if exists:
                c.execute(update(console_signin_state).where(console_signin_state.c.operator == operator).values(**vals))
            else:
                c.execute(insert(console_signin_state).values(operator=operator, **vals))

    def unlock(self, operator: str) -> None:
        with self.sessions.engine.begin() as c:
            c.execute(delete(console_signin_state).where(console_signin_state.c.operator == operator))


def _verify(h: str, password: str) -> bool:
    try:
        return _HASHER.verify(h, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False

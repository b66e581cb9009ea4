"""Where key passphrases come from, and keeping them out of the process environment.

Each passphrase has a *name*, the environment variable that may carry it
(``HEDUI_KEY_PASSPHRASE`` for a node's keys; ``HEDUI_CA_PASSPHRASE`` and
``HEDUI_DIRECTORY_PASSPHRASE`` for the authority's two keys; ``HEDUI_NEW_KEY_PASSPHRASE``
for ``hedui keys rekey``). It is looked up, in order:

1. a value given on the command line, read from a file (``--passphrase-file``) or a file
   descriptor (``--passphrase-fd``, e.g. ``3<secret`` or a pipe from a secrets manager) —
   :func:`provide`;
2. the environment variable ``NAME``: accepted for compatibility, but read once and then
   *removed*: its value is overwritten in place (with ``x``) and the variable unset, so
   ``/proc/<pid>/environ`` and ``ps eww`` show only ``x``s and a child process does not
   inherit it (issue 18 finding 2);
3. the file named by the environment variable ``NAME_FILE`` (e.g. ``HEDUI_KEY_PASSPHRASE_FILE``).

One trailing newline (``\\n`` or ``\\r\\n``) is stripped from a file or descriptor, as from
``echo pw > file``. A passphrase read once is kept in process memory (the keys it unlocks
are there anyway), so a second key in the same process finds it after the variable is gone.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from hedui.keys.errors import KeyFileError

__all__ = [
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV",
    "CA_PASSPHRASE_ENV",
    "DIRECTORY_PASSPHRASE_ENV",
    "NEW_PASSPHRASE_ENV",
    "MIN_LENGTH",
    "passphrase",
    "provide",
    "read_file",
    "read_fd",
    "forget",
    "scrub_env",
]

PASSPHRASE_ENV = "HEDUI_KEY_PASSPHRASE"
PASSPHRASE_FILE_ENV = PASSPHRASE_ENV + "_FILE"
CA_PASSPHRASE_ENV = "HEDUI_CA_PASSPHRASE"
DIRECTORY_PASSPHRASE_ENV = "HEDUI_DIRECTORY_PASSPHRASE"
NEW_PASSPHRASE_ENV = "HEDUI_NEW_KEY_PASSPHRASE"
MIN_LENGTH = 8

log = logging.getLogger("hedui.keys")

_given: dict[str, bytes] = {}  # from --passphrase-file / --passphrase-fd
_taken: dict[str, bytes] = {}  # read from the environment, then scrubbed from it


def _strip(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def read_file(path: Path, *, what: str = "--passphrase-file") -> bytes:
    try:
        return _strip(Path(path).read_bytes())
    except OSError as exc:
        raise KeyFileError(f"{what}: cannot read {path}: {exc.strerror}") from None


def read_fd(fd: int, *, what: str = "--passphrase-fd") -> bytes:
    """Reads a descriptor to its end and closes it (so the secret is not left readable)."""
    if fd < 0:
        raise KeyFileError(f"{what}: got {fd}, want an open file descriptor (0 or more)")
    chunks = []
    try:
        with os.fdopen(fd, "rb", closefd=True) as fh:
            while chunk := fh.read(4096):
                chunks.append(chunk)
                if sum(map(len, chunks)) > 4096:
                    raise KeyFileError(f"{what}: got more than 4,096 bytes, want one passphrase")
    except OSError as exc:
        raise KeyFileError(f"{what}: cannot read descriptor {fd}: {exc.strerror}") from None
    return _strip(b"".join(chunks))


#: Passphrases a generic ``--passphrase-file`` never stands in for (each has its own option).
_OWN_OPTION = (CA_PASSPHRASE_ENV, DIRECTORY_PASSPHRASE_ENV, NEW_PASSPHRASE_ENV)


def provide(value: bytes, *, env: str | None = None) -> None:
    """Sets a passphrase from the command line (wins over the environment): the one called
    ``env``, or with ``env=None`` every one except the CA's, the directory key's and rekey's new one."""
    _given[env or "*"] = _checked(value, env or "--passphrase-file/--passphrase-fd")


def forget() -> None:
    """Drops every passphrase held in this process (tests; a long-lived tool after use)."""
    _given.clear()
    _taken.clear()


def scrub_env(name: str) -> None:
    """Overwrites the variable's value where libc keeps it, then unsets it.

    ``os.environ.pop`` alone calls ``unsetenv``, which only drops the pointer: the bytes stay
    in the initial environment block that ``/proc/<pid>/environ`` shows. Zeroing them first
    (through ``getenv``'s pointer, which points into that block or a ``setenv`` copy) removes
    them from it."""
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: libc's getenv/strlen (no ldconfig run)
        libc.getenv.restype = ctypes.c_void_p
        ptr = libc.getenv(name.encode())
        if ptr:
            size = libc.strlen(ctypes.c_void_p(ptr))
            ctypes.memset(ptr, ord("x"), size)
    except (OSError, AttributeError):  # no libc to reach (not Linux/glibc): unsetting is all we can do
        log.debug("cannot overwrite $%s in place; unsetting it only", name)
    os.environ.pop(name, None)


def _checked(value: bytes, name: str) -> bytes:
    if len(value) < MIN_LENGTH:
        raise KeyFileError(f"{name}: got a passphrase of {len(value)} characters, want at least {MIN_LENGTH}")
    return value


def passphrase(explicit: str | bytes | None = None, *, env: str = PASSPHRASE_ENV) -> bytes:
    """Returns the passphrase called ``env``, or raises :class:`KeyFileError` naming where to put one."""
    if explicit is not None:
        return _checked(explicit.encode() if isinstance(explicit, str) else bytes(explicit), "key passphrase")
    if env in _given:
        return _given[env]
    if "*" in _given and env not in _OWN_OPTION:
        return _given["*"]
    if os.environ.get(env):
        value = os.environ[env].encode()
        scrub_env(env)
        _taken[env] = _checked(value, f"${env}")
        return _taken[env]
    if env in _taken:
        return _taken[env]
    file_env = env + "_FILE"
    if os.environ.get(file_env):
        return _checked(read_file(Path(os.environ[file_env]), what=f"${file_env}"), f"${file_env}")
    raise KeyFileError(
        f"key passphrase: got none, want --passphrase-file, --passphrase-fd, ${env} or a file named by ${file_env}"
    )

"""Shared fixtures: conformance vectors, and a fresh node store on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from hedui.node.store.db import open_engine, sqlite_url

ROOT = Path(__file__).resolve().parent.parent
#: Conformance vectors, kept in the repository (tests/vectors/README.md) so a plain clone runs them.
VECTORS = ROOT / "tests" / "vectors"
_VECTOR_SETS = ("merkle", "note", "oprf", "dsse")
PG_ADMIN_URL = os.environ.get("HEDUI_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session", autouse=True)
def _cheap_key_files():
    """Key files written by tests use scrypt at the floor the reader accepts (N = 2^14, ~40 ms)
    instead of the product's N = 2^17 (~0.3 s), so a testbed of ten keys starts in a second.
    The format, the AEAD and every check are the same; tests/test_keyfile.py covers 2^17."""
    from hedui.keys.keyfile import KdfParams, set_default_params

    old = set_default_params(KdfParams(log2_n=14, r=8, p=1))
    yield
    set_default_params(old)


@pytest.fixture(scope="session")
def vectors() -> Path:
    # A conformance test that skips lets a broken build pass: missing vectors fail the run.
    missing = [s for s in _VECTOR_SETS if not (VECTORS / s / "SOURCE.md").is_file()]
    if missing:
        pytest.fail(f"conformance vectors missing at {VECTORS}: {', '.join(missing)} (see tests/vectors/README.md)")
    return VECTORS


def _pg_available() -> bool:
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_admin():
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is not reachable in CI")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    yield eng
    eng.dispose()


@contextlib.contextmanager
def scratch_database(pg_admin) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (its URL), dropped on exit; for fixtures of any scope."""
    name = f"hedui_t_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture
def pg_url(pg_admin):
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    with scratch_database(pg_admin) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    """A store URL for each backend: every storage test runs on both."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "node.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite store brought to the newest schema by the real migrations, once per test
    process: :func:`engine` copies the file (~2 ms) instead of migrating each store (~0.1 s,
    mostly Alembic loading its scripts)."""
    from hedui.node.store import migrate

    path = tmp_path_factory.mktemp("migrated") / "node.db"
    eng = open_engine(sqlite_url(path))
    migrate.upgrade(eng)
    with eng.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the copy must hold every page in the file itself"
    return path


@pytest.fixture
def engine(request, store_url):
    """An engine on a fresh store, brought to the newest schema by the real migrations. On
    SQLite the store is a byte copy of one the migrations brought there in this test process
    (the same tables, indexes and revision; a broken migration fails every test that uses
    it, and every testbed node still migrates its own fresh store); on PostgreSQL each store
    is migrated (copying a database from a template costs about as much as migrating it)."""
    from hedui.node.store import migrate

    url = make_url(store_url)
    if url.get_backend_name() == "sqlite":
        dest = Path(url.database or "")
        assert url.database and not dest.exists(), f"{dest}: engine expects a fresh store"
        shutil.copyfile(request.getfixturevalue("_migrated_sqlite"), dest)
        eng = open_engine(store_url)
        assert migrate.current(eng) == _head()
    else:
        eng = open_engine(store_url)
        migrate.upgrade(eng)
    yield eng
    eng.dispose()


@functools.cache
def _head() -> str | None:
    from hedui.node.store import migrate

    return migrate.head()

"""A loopback federation of the nine department nodes over generated department databases,
configured with the acceptance files in ``config/`` (DESIGN-12 "Acceptance configuration"),
for the end-to-end acceptance tests::

    from hedui.node.testbed.departments import generate
    from hedui.node.testbed.departments.federation import over_departments, build_indexes

    generate(sqlite_dir=data, residents=300)
    tb = over_departments(root, sqlite_dir=data, clock=FixedClock(...))   # or pg_url=…
    build_indexes(tb)
    tb.start()

Member codes are the department keys (``huji``, ``shebao`` …) plus a hub (``hub``). Each
department node gets an OPRF seed, its catalogue (published in the directory) and its mappings
(``[provider] mappings = [...]``); each mapping finds its database through
``HEDUI_DEPT_<KEY>_URL``, which :func:`over_departments` sets (a SQLite file per department,
or the PostgreSQL database with the department's schema first on the search path).
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from hedui.common.clock import Clock
from hedui.keys.keyfile import load_secret, save_secret
from hedui.keys.oprf import ServerKey
from hedui.node.testbed.federation import MemberPlan, Testbed
from hedui.node.verification.provider import OPRF_SEED_LABEL

__all__ = ["CONFIG_DIR", "DEPARTMENT_NAMES", "url_env", "over_departments", "build_indexes", "department_members"]

CONFIG_DIR = Path(__file__).parent / "config"

DEPARTMENT_NAMES = {
    "huji": "博山分局户政管理大队",
    "shebao": "博山区人力资源和社会保障局",
    "shuiwu": "博山区税务局",
    "cheguan": "博山交警大队车管所",
    "budongchan": "博山区不动产登记中心",
    "gongjijin": "淄博市住房公积金管理中心博山分中心",
    "yibao": "博山区医疗保障分局",
    "canlian": "博山区残疾人联合会",
    "minzheng": "博山区民政局",
}


def url_env(dept: str) -> str:
    return f"HEDUI_DEPT_{dept.upper()}_URL"


def department_url(dept: str, *, sqlite_dir: Path | str | None = None, pg_url: str | None = None) -> str:
    """The SQLAlchemy URL of one department's database."""
    if sqlite_dir is not None:
        return f"sqlite:///{(Path(sqlite_dir) / f'{dept}.sqlite').resolve()}"
    assert pg_url is not None
    # The mappings name bare tables: the department's schema goes first on the search path.
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}options={quote(f'-csearch_path={dept}')}"


def department_members(depts: list[str] | None = None) -> list[MemberPlan]:
    return [MemberPlan("hub", "博山区社会救助服务中心", ["hub"])] + [
        MemberPlan(d, DEPARTMENT_NAMES[d], ["provider"], discovery=False) for d in (depts or list(DEPARTMENT_NAMES))]


def _setup(tb: Testbed) -> None:
    """The testbed step: seeds, catalogue and mappings of every department member."""
    pw = tb.passphrase.encode()
    for m in tb.members:
        if m.code not in DEPARTMENT_NAMES:
            continue
        md = tb.member_dir(m.code)
        seed = os.urandom(32)
        save_secret(md / "oprf-epoch1.seed", seed, pw, label=OPRF_SEED_LABEL)
        pub = ServerKey.derive(seed, 1).public_key_bytes
        src = CONFIG_DIR / m.code
        maps = sorted(p.name for p in src.glob("mapping-*.toml"))
        for name in [*maps, "fields.toml"]:
            shutil.copyfile(src / name, md / name)
        cat = tomllib.loads((src / "fields.toml").read_text(encoding="utf-8"))
        m.fields = [{k: f.get(k, "") for k in ("name", "type", "unit", "description")} for f in cat["fields"]]
        m.extra_spec = {**m.extra_spec, "oprf_keys": [{"epoch": 1, "public_key_hex": pub.hex()}]}
        m.extra_config = {**m.extra_config, "provider": {
            "mappings": maps, "fields": "fields.toml", "oprf_seed": "oprf-epoch1.seed", "epoch": 1}}


def over_departments(root: Path | str, *, sqlite_dir: Path | str | None = None, pg_url: str | None = None,
                     clock: Clock | None = None, depts: list[str] | None = None,
                     store: Callable[[str], str] | None = None) -> Testbed:
    """Creates (does not start) a federation of a hub and the department nodes over the
    databases written by :func:`hedui.node.testbed.departments.generate` (``sqlite_dir`` or
    ``pg_url``). ``store`` maps a member code to its node store URL (default SQLite files)."""
    if (sqlite_dir is None) == (pg_url is None):
        raise ValueError("over_departments: got both or neither of sqlite_dir and pg_url, want one")
    for d in depts or DEPARTMENT_NAMES:
        os.environ[url_env(d)] = department_url(d, sqlite_dir=sqlite_dir, pg_url=pg_url)
    tb = Testbed(Path(root), department_members(depts), clock=clock, store=store, setup=[_setup, _policy])
    tb.create()
    _town_routes(tb)
    return tb


def _policy(tb: Testbed) -> None:
    """The testbed step after :func:`_setup` (the catalogues are known): the default policy,
    with room for the cross-checks the tests and benchmarks run in a minute (each asks every
    target department for its filter header)."""
    from hedui.node.testbed.federation import default_policy

    rules = default_policy(tb.members)
    for r in rules:
        if r["method"] == "/hedui.v1.PseudonymService/GetTokenFilter":
            r.update(per_minute=600, per_day=10_000)
    tb.policy = rules


def _town_routes(tb: Testbed) -> None:
    """Routes from the civil-affairs towns (``jz_jt.szxz``) to the towns themselves, so a
    cross-check's stop-warning leads reach the town where the family lives (issue 14)."""
    import tomli_w

    from hedui.node.testbed.departments.minzheng import TOWNS

    path = tb.member_dir("hub") / "hub-discovery.toml"
    if not path.exists():
        return
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    have = {r["region"] for r in doc["routes"]}
    doc["routes"] += [{"region": code, "event_type": "*", "assignee": code, "assignee_kind": "town", "name": name}
                      for code, name in TOWNS.items() if code not in have]
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")


def build_indexes(tb: Testbed, codes: list[str] | None = None, *, workers: int = 0) -> dict[str, int]:
    """Builds epoch 1 of every department node's index from all its mappings; returns the
    records read per node."""
    from hedui.adapters import open_adapter
    from hedui.node.config import load_config
    from hedui.node.store import migrate
    from hedui.node.store.db import open_engine
    from hedui.node.verification.index import build_index

    out: dict[str, int] = {}
    for m in tb.members:
        if m.code not in DEPARTMENT_NAMES or (codes is not None and m.code not in codes):
            continue
        cfg = load_config(tb.config_path(m.code))
        assert cfg.provider is not None and cfg.provider.oprf_seed is not None
        eng = open_engine(cfg.store_url())
        try:
            migrate.upgrade(eng)
            key = ServerKey.derive(load_secret(cfg.path(cfg.provider.oprf_seed), tb.passphrase.encode(),
                                               label=OPRF_SEED_LABEL), 1)
            out[m.code] = 0
            for path in cfg.provider.mapping_paths():
                adapter = open_adapter(cfg.path(path))
                try:
                    assert tb.clock is not None, "the department federation runs on a fixed clock"
                    out[m.code] += build_index(eng, adapter, key, 1, clock=tb.clock, workers=workers,
                                               data_date=cfg.provider.data_date).records
                finally:
                    adapter.close()
        finally:
            eng.dispose()
    return out

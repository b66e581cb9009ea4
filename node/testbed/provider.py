"""Testbed set-up for provider members: synthetic department data, mappings, OPRF seeds, field
catalogues and the token index. :class:`~hedui.node.testbed.federation.Testbed` calls
:func:`create`, :func:`spec` and :func:`config` explicitly.

Each provider member whose code is in :data:`DEPARTMENT_OF` gets its own department
database (``members/<code>/dept.db``, written by :mod:`hedui.adapters.synthetic`), the
mapping the synthetic generator writes for it, an encrypted OPRF seed for epoch 1, and the
field catalogue below. All departments draw from one synthetic population, so a household
of residents 1..4 has records in several departments.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import tomli_w

from hedui.common.clock import SystemClock
from hedui.keys.keyfile import save_secret
from hedui.keys.oprf import ServerKey
from hedui.node.verification.provider import OPRF_SEED_LABEL

if TYPE_CHECKING:
    from hedui.node.testbed.federation import MemberPlan, Testbed

DEPARTMENT_OF = {
    "tax": "tax",
    "hrss": "social_security",
    "realestate": "real_estate",
    "vehicles": "vehicles",
    "medins": "medical",
    "disability": "disability",
}

# Field catalogues: what each department answers, derived from the synthetic facts.
CATALOGUES: dict[str, list[dict]] = {
    "tax": [
        {"name": "income_last_year", "type": "money", "unit": "CNY", "description": "上年度应纳税所得额",
         "fact": "annual_taxable_income", "agg": "latest", "window_months": 24},
    ],
    "hrss": [
        {"name": "wages_12m", "type": "money", "unit": "CNY", "description": "近12个月工资收入合计",
         "fact": "wage", "agg": "sum", "window_months": 12},
        {"name": "pension_monthly", "type": "money", "unit": "CNY", "description": "月养老金",
         "fact": "pension", "agg": "latest", "window_months": 3},
        {"name": "unemployment_12m", "type": "money", "unit": "CNY", "description": "近12个月失业保险金",
         "fact": "unemployment_benefit", "agg": "sum", "window_months": 12},
    ],
    "realestate": [
        {"name": "property_count", "type": "integer", "unit": "count", "description": "名下不动产数量",
         "fact": "property_area", "agg": "count"},
        {"name": "property_area_total", "type": "decimal", "unit": "m2", "description": "名下不动产总面积",
         "fact": "property_area", "agg": "sum"},
    ],
    "vehicles": [
        {"name": "vehicle_count", "type": "integer", "unit": "count", "description": "名下机动车数量",
         "fact": "vehicle", "agg": "count"},
        {"name": "vehicle_max_price", "type": "money", "unit": "CNY", "description": "名下机动车最高购置价",
         "fact": "vehicle", "agg": "max"},
    ],
    "medins": [
        {"name": "inpatient_oop_12m", "type": "money", "unit": "CNY", "description": "近12个月住院政策内自付合计",
         "fact": "inpatient_out_of_pocket", "agg": "sum", "window_months": 12},
    ],
    "disability": [
        {"name": "disability_grade", "type": "code", "unit": "grade", "description": "残疾等级",
         "fact": "disability", "agg": "latest"},
    ],
}

RESIDENTS = int(os.environ.get("HEDUI_TESTBED_RESIDENTS", "400"))


def _is_provider(tb: Testbed, m: MemberPlan) -> bool:
    return "provider" in m.roles and m.code in DEPARTMENT_OF


def create(tb: Testbed, *, residents: int | None = None) -> None:
    n = residents or tb.residents or RESIDENTS
    pw = tb.passphrase.encode()
    today = (tb.clock or SystemClock()).today()  # the synthetic data ends on the federation's today
    from hedui.adapters.synthetic import write_sql

    for m in tb.members:
        if not _is_provider(tb, m):
            continue
        md = tb.member_dir(m.code)
        seed = os.urandom(32)
        save_secret(md / "oprf-epoch1.seed", seed, pw, label=OPRF_SEED_LABEL)
        m.oprf_public = ServerKey.derive(seed, 1).public_key_bytes
        m.fields = [{k: f[k] for k in ("name", "type", "unit", "description")} for f in CATALOGUES[m.code]]
        (md / "fields.toml").write_text(tomli_w.dumps({"fields": CATALOGUES[m.code]}), encoding="utf-8")
        dept = DEPARTMENT_OF[m.code]
        url = f"sqlite:///{(md / 'dept.db').resolve()}"
        paths = write_sql(url, residents=n, seed=tb.data_seed, departments=[dept],
                          mapping_dir=md / "mapping", as_of=today, share=_SHARE)
        (md / "mapping.toml").write_text(paths[dept].read_text(encoding="utf-8"), encoding="utf-8")


# The demo household (residents 1..4) should show up in several departments.
_SHARE = {"tax": 0.8, "social_security": 0.9}


def spec(tb: Testbed, m: MemberPlan) -> dict:
    """The member's directory entry additions: its epoch 1 OPRF public key."""
    if not _is_provider(tb, m) or m.oprf_public is None:
        return {}
    return {"oprf_keys": [{"epoch": 1, "public_key_hex": m.oprf_public.hex()}]}


def config(tb: Testbed, m: MemberPlan) -> dict:
    if not _is_provider(tb, m):
        return {}
    return {"provider": {"mapping": "mapping.toml", "oprf_seed": "oprf-epoch1.seed", "epoch": 1, "fields": "fields.toml"}}


def build_indexes(tb: Testbed, codes: list[str] | None = None, *, workers: int = 0) -> dict[str, int]:
    """Builds epoch 1 of every provider's token index (before or while nodes run)."""
    from hedui.adapters import open_adapter
    from hedui.keys.keyfile import load_secret
    from hedui.node.config import load_config
    from hedui.node.store import migrate
    from hedui.node.store.db import open_engine
    from hedui.node.verification.index import build_index

    out = {}
    for m in tb.members:
        if not _is_provider(tb, m) or (codes is not None and m.code not in codes):
            continue
        cfg = load_config(tb.config_path(m.code))
        eng = open_engine(cfg.store_url())
        try:
            migrate.upgrade(eng)
            key = ServerKey.derive(load_secret(cfg.path(cfg.provider.oprf_seed), tb.passphrase.encode(), label=OPRF_SEED_LABEL), 1)
            out[m.code] = 0
            for path in cfg.provider.mapping_paths():
                adapter = open_adapter(cfg.path(path))
                try:
                    rep = build_index(eng, adapter, key, 1, clock=tb.clock or SystemClock(), workers=workers,
                                      data_date=cfg.provider.data_date)
                finally:
                    adapter.close()
                out[m.code] += rep.records
        finally:
            eng.dispose()
    return out


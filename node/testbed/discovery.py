"""Testbed set-up for active discovery (:class:`~hedui.node.testbed.federation.Testbed` calls
:func:`create`, :func:`spec` and :func:`config` explicitly).

- Every hub member gets a sealing key (``sealing.key``, encrypted with the testbed passphrase;
  the public half is published in its directory entry as ``sealing_key_hex``), a person-key
  secret and ``hub-discovery.toml`` (hub code, secret, routes to three towns and a district
  centre); its ``node.toml`` gets ``[hub] sealing_key`` and ``routing``.
- Every provider member whose code names a department in :data:`DISCOVERY_DEPARTMENTS`
  (``medins``, ``disability``, ``fire``, ``traffic``) gets discovery data, a ``rules.toml``
  (the department's shipped rules) and ``[provider] rules``, ``hub``, ``mapping`` and
  ``detect_at = "manual"`` (tests and the demo run detection for :data:`SCENARIO_AS_OF`
  themselves). Set ``discovery=False`` on a :class:`~hedui.node.testbed.MemberPlan`
  to leave a member out.

Data: where :mod:`hedui.node.testbed.provider` already gave the member a synthetic
department database (medical insurance, disability federation), the scenario's events are
added to that database as extra rows and the rules are pointed at the synthetic fact names
(a department's rules name the facts its mapping yields); otherwise the member gets a small
CSV export and mapping written here. Identities come from
:func:`hedui.adapters.synthetic.resident`, so a person's events at several departments merge
into one lead at the hub. :data:`SCENARIO` lists the planted events; the synthetic background
data may add a few more detections.
"""

from __future__ import annotations

import csv
import os
import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING

import tomli_w

from hedui.keys.keyfile import PURPOSE_PERSON_SECRET, save_secret
from hedui.keys.sealing import SealingKey

if TYPE_CHECKING:
    from hedui.node.testbed.federation import MemberPlan, Testbed

__all__ = [
    "SCENARIO_AS_OF",
    "SCENARIO",
    "DISCOVERY_DEPARTMENTS",
    "TOWNS",
    "discovery_department",
    "hub_code",
    "planted_identity",
    "expected_detections",
]

#: The run date of the scenario: Thursday 9 October 2025, the first working day after the
#: National Day holiday (1–8 October; Saturday 11 October is a make-up working day). Weekly
#: rules look at 29 September – 5 October, monthly ones at September, rolling ones at the 31
#: days up to 9 October.
SCENARIO_AS_OF = date(2025, 10, 9)

TOWNS = {"370304001": "城东街道", "370304002": "城西街道", "370304003": "山头街道"}
DISTRICT = "370304"


@dataclass(frozen=True)
class Event:
    """One planted department event about synthetic resident ``resident``."""

    department: str
    resident: int
    on: date
    value: str
    attrs: tuple[tuple[str, str], ...] = ()
    detected: tuple[str, ...] = ()  # rule ids that fire on it for SCENARIO_AS_OF


def _d(s: str) -> date:
    return date.fromisoformat(s)


SCENARIO: tuple[Event, ...] = (
    # Medical insurance: compliant out-of-pocket cost of one stay, by discharge date.
    Event("medins", 1, _d("2025-09-12"), "26800.00", (("admitted_on", "2025-09-01"), ("hospital", "区人民医院")),
          ("medins.inpatient_single_20k",)),
    Event("medins", 2, _d("2025-09-20"), "21000.00", (("admitted_on", "2025-09-15"), ("hospital", "市中医院")),
          ("medins.inpatient_single_20k",)),
    Event("medins", 3, _d("2025-08-10"), "25000.00", (("admitted_on", "2025-08-01"), ("hospital", "省肿瘤医院"))),
    Event("medins", 3, _d("2025-09-25"), "19999.99", (("admitted_on", "2025-09-18"), ("hospital", "省肿瘤医院")),
          ("medins.inpatient_yearly_40k",)),
    Event("medins", 11, _d("2025-09-03"), "45000.00", (("admitted_on", "2025-08-20"), ("hospital", "市人民医院")),
          ("medins.inpatient_single_20k", "medins.inpatient_yearly_40k")),
    Event("medins", 12, _d("2025-10-02"), "30000.00", (("admitted_on", "2025-09-28"), ("hospital", "区人民医院"))),
    # Disability federation: certificates issued (grade, category).
    Event("disability", 1, _d("2025-09-30"), "2", (("category", "4"),), ("disability.newly_certified",)),
    Event("disability", 4, _d("2025-10-03"), "3", (("category", "1"),), ("disability.newly_certified",)),
    Event("disability", 12, _d("2025-09-26"), "4", (("category", "2"),)),
    # Fire brigade: fires with direct loss in yuan and the brigade's "large loss" mark.
    Event("fire", 2, _d("2025-09-30"), "180000.00", (("large_loss", "true"), ("region", "370304001")),
          ("fire.large_loss",)),
    Event("fire", 13, _d("2025-10-07"), "95000.00", (("large_loss", "true"), ("region", "370304002")),
          ("fire.large_loss",)),
    Event("fire", 14, _d("2025-10-08"), "3000.00", (("large_loss", "false"), ("region", "370304001"))),
    Event("fire", 15, _d("2025-06-02"), "250000.00", (("large_loss", "true"), ("region", "370304003"))),
    # Traffic police: accidents and their outcome.
    Event("traffic", 4, _d("2025-10-08"), "1", (("outcome", "disability"), ("region", "370304001")),
          ("traffic.accident_death_disability",)),
    Event("traffic", 14, _d("2025-10-05"), "1", (("outcome", "injury"), ("region", "370304002"))),
)

#: Departments this module can give discovery data, by department code.
DISCOVERY_DEPARTMENTS = ("medins", "disability", "fire", "traffic")

# Where the synthetic generator names a fact differently from the shipped rules, the
# testbed's rules follow the data (as a department's own rule file would).
_SYNTHETIC_RULES = {
    "medins": {"facts": {"inpatient_stay": "inpatient_out_of_pocket"}},
    "disability": {"facts": {"disability_certificate": "disability"}, "details": ["kind", "cert_no"]},
}


def discovery_department(tb, m) -> str | None:
    """The discovery department of member ``m``, or None."""
    if "provider" not in m.roles or not m.discovery or hub_code(tb) is None:
        return None
    dept = m.code.replace("-", "_")
    return dept if dept in DISCOVERY_DEPARTMENTS else None


def hub_code(tb) -> str | None:
    return next((m.code for m in tb.members if "hub" in m.roles), None)


def planted_identity(tb, resident: int) -> str:
    from hedui.adapters.synthetic import resident as _resident

    return _resident(resident, tb.data_seed).id_number


def expected_detections(department: str) -> list[tuple[int, str]]:
    """``(resident, rule id)`` the planted events of ``department`` yield on SCENARIO_AS_OF."""
    return [(e.resident, r) for e in SCENARIO if e.department == department for r in e.detected]


# ---------------------------------------------------------------- hooks


def create(tb: Testbed) -> None:
    pw = tb.passphrase.encode()
    for m in tb.members:
        md = tb.member_dir(m.code)
        if "hub" in m.roles:
            _create_hub(tb, m, md, pw)
        dept = discovery_department(tb, m)
        if dept is not None:
            _create_provider(tb, m, dept, md)


def _create_hub(tb, m, md, pw: bytes) -> None:
    key = SealingKey.generate()
    key.save(md / "sealing.key", pw)
    (md / "sealing.pub").write_bytes(key.public_bytes())
    save_secret(md / "person.secret", os.urandom(32), pw, label=PURPOSE_PERSON_SECRET)
    routes = [
        {"region": "", "event_type": "*", "assignee": "370304-center", "assignee_kind": "department",
         "name": "博山区社会救助服务中心"},
        {"region": "", "event_type": "education_aid_application", "assignee": "370304-edu",
         "assignee_kind": "department", "name": "博山区教育和体育局"},
    ] + [{"region": code, "event_type": "*", "assignee": code, "assignee_kind": "town", "name": name}
         for code, name in TOWNS.items()]
    doc = {"hub": m.code, "person_secret_file": "person.secret", "referral_workdays": 5, "routes": routes}
    (md / "hub-discovery.toml").write_text(
        "# Hub discovery settings (Hub.from_config): person-key secret and referral routes.\n"
        "# The public sealing key is the one the directory publishes for this member.\n" + tomli_w.dumps(doc),
        encoding="utf-8",
    )


def _create_provider(tb, m, dept: str, md) -> None:
    events = [e for e in SCENARIO if e.department == dept]
    rules = tomllib.loads(
        (resources.files("hedui.node") / "data" / f"rules-{dept.replace('_', '-')}.toml").read_text(encoding="utf-8")
    )
    synthetic = (md / "mapping.toml").exists() and dept in _SYNTHETIC_RULES
    if synthetic:
        _plant_rows(tb, md, dept, events)
        adapt = _SYNTHETIC_RULES[dept]
        rules["default_region"] = DISTRICT
        for r in rules["rules"]:
            r["fact"] = adapt["facts"].get(r["fact"], r["fact"])
            if "details" in adapt and "details" in r:
                r["details"] = adapt["details"]
        m.discovery_mapping = "mapping.toml"
    else:
        rules.setdefault("default_region", DISTRICT)
        m.discovery_mapping = _write_csv(tb, md, dept, events)
    (md / "rules.toml").write_text(
        f"# {dept} detection rules for the testbed (from the shipped rules-{dept}.toml).\n" + tomli_w.dumps(rules),
        encoding="utf-8",
    )


# Synthetic SQL tables (hedui.adapters.synthetic) the planted events go into.
def _plant_rows(tb, md, dept: str, events: list[Event]) -> None:
    from sqlalchemy import MetaData, Table, create_engine, func, select

    from hedui.adapters.mapping import load_mapping

    src = load_mapping(md / "mapping.toml").source
    engine = create_engine(src.resolved_url())
    try:
        table = Table(src.table, MetaData(), autoload_with=engine)
        stamp = datetime.combine(SCENARIO_AS_OF, datetime.min.time())
        with engine.begin() as conn:
            next_id = (conn.execute(select(func.max(table.c.id))).scalar() or 0) + 1
            rows = []
            for i, e in enumerate(events):
                a = dict(e.attrs)
                idn = planted_identity(tb, e.resident)
                if dept == "medins":
                    oop = Decimal(e.value)
                    rows.append({"id": next_id + i, "patient_idno": idn, "hospital": a["hospital"],
                                 "admitted_on": date.fromisoformat(a["admitted_on"]), "discharged_on": e.on,
                                 "total_cost_yuan": (oop * 3).quantize(Decimal("0.01")), "oop_compliant_yuan": oop,
                                 "updated_at": stamp})
                else:
                    rows.append({"id": next_id + i, "idno": idn, "cert_no": f"CDPF-{e.on.year}-9{next_id + i:05d}",
                                 "kind": int(a["category"]), "grade": int(e.value), "issued_on": e.on,
                                 "updated_at": stamp})
            conn.execute(table.insert(), rows)
    finally:
        engine.dispose()


# CSV exports written here: (file, key column, identity column, columns, fact mapping).
_CSV = {
    "medins": ("medins.csv", "结算编号", "身份证号", ["医疗机构", "入院日期", "出院日期", "政策范围内自付(元)"],
               {"name": "inpatient_stay", "column": "政策范围内自付(元)", "type": "money", "unit": "yuan",
                "date": "出院日期", "attrs": {"hospital": "医疗机构",
                                           "admitted_on": {"column": "入院日期", "type": "date"}}}),
    "disability": ("disability.csv", "证号", "身份证号", ["残疾类别", "残疾等级", "发证日期"],
                   {"name": "disability_certificate", "column": "残疾等级", "type": "code", "date": "发证日期",
                    "attrs": {"grade": "残疾等级", "category": "残疾类别"}}),
    "fire": ("fire.csv", "火灾编号", "户主身份证号", ["起火日期", "直接经济损失(元)", "较大损失", "区划代码"],
             {"name": "fire", "column": "直接经济损失(元)", "type": "money", "unit": "yuan", "date": "起火日期",
              "attrs": {"large_loss": "较大损失", "region": "区划代码"}}),
    "traffic": ("traffic.csv", "事故编号", "当事人身份证号", ["事故日期", "伤亡人数", "事故后果", "区划代码"],
                {"name": "traffic_accident", "column": "伤亡人数", "type": "integer", "unit": "count",
                 "date": "事故日期", "attrs": {"outcome": "事故后果", "region": "区划代码"}}),
}


def _csv_cells(dept: str, e: Event) -> list[str]:
    a = dict(e.attrs)
    if dept == "medins":
        return [a["hospital"], a["admitted_on"], e.on.isoformat(), e.value]
    if dept == "disability":
        return [a["category"], e.value, e.on.isoformat()]
    if dept == "fire":
        return [e.on.isoformat(), e.value, a["large_loss"], a["region"]]
    return [e.on.isoformat(), e.value, a["outcome"], a["region"]]


def _write_csv(tb, md, dept: str, events: list[Event]) -> str:
    name, key, ident, columns, fact = _CSV[dept]
    out = md / "discovery"
    out.mkdir(parents=True, exist_ok=True)
    with (out / name).open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow([key, ident] + columns)
        for i, e in enumerate(events, start=1):
            w.writerow([f"{dept.upper()}-{i:05d}", planted_identity(tb, e.resident)] + _csv_cells(dept, e))
        # One row with a wrong check character: the adapter reports it, detection skips it.
        bad = planted_identity(tb, 99)
        bad = bad[:17] + ("0" if bad[17] != "0" else "1")
        w.writerow([f"{dept.upper()}-{len(events) + 1:05d}", bad] + _csv_cells(dept, events[0]))
    mapping = {
        "version": 1,
        "name": f"{dept}_discovery",
        "department": dept,
        "source": {"kind": "csv", "path": name, "encoding": "utf-8", "primary_key": key},
        "identity": {"column": ident},
        "facts": [fact],
    }
    (out / f"{dept}.toml").write_text(tomli_w.dumps(mapping), encoding="utf-8")
    return f"discovery/{dept}.toml"


def spec(tb: Testbed, m: MemberPlan) -> dict:
    if "hub" not in m.roles:
        return {}
    return {"sealing_key_hex": (tb.member_dir(m.code) / "sealing.pub").read_bytes().hex()}


def config(tb: Testbed, m: MemberPlan) -> dict:
    out: dict = {}
    if "hub" in m.roles:
        out["hub"] = {"sealing_key": "sealing.key", "routing": "hub-discovery.toml"}
    if discovery_department(tb, m) is not None and m.discovery_mapping is not None:
        # The scenario plants one bad row among a handful (a fifth of the fire export): the
        # demo allows that share; the default (5 %) is for real exports of thousands of rows.
        out["provider"] = {"rules": "rules.toml", "hub": hub_code(tb), "mapping": m.discovery_mapping,
                           "detect_at": "manual", "max_unusable_share": 0.25}
    return out

"""The synthetic department data: deterministic, valid, and the same through SQL and CSV."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import create_engine, inspect, text

from hedui.adapters import open_adapter
from hedui.adapters.idnum import normalize
from hedui.adapters.mapping import load_mapping
from hedui.adapters.records import Record
from hedui.adapters.synthetic import DEPARTMENTS, resident, residents, write_csv, write_sql

N = 400


def _dump(url: str) -> dict[str, list[tuple]]:
    eng = create_engine(url)
    with eng.connect() as c:
        out = {t: [tuple(r) for r in c.execute(text(f"SELECT * FROM {t} ORDER BY id"))]
               for t in sorted(inspect(c).get_table_names())}
    eng.dispose()
    return out


def _canonical(mapping) -> list[tuple]:
    """Records and problems without their locators, in source order."""
    out = []
    for item in open_adapter(mapping).records():
        if isinstance(item, Record):
            out.append((item.identity, tuple((f.name, f.value, f.unit, f.on, tuple(sorted(f.attrs.items())))
                                             for f in item.facts)))
        else:
            out.append(("problem", item.reason))
    return out


def test_residents_are_valid_unique_and_addressable():
    people = list(residents(5000, seed=9))
    assert len({p.id_number for p in people}) == 5000
    assert all(normalize(p.id_number) == p.id_number for p in people)
    assert all(p.sex == ("M" if int(p.id_number[16]) % 2 else "F") for p in people)
    assert resident(1234, seed=9) == people[1233]
    assert resident(1234, seed=8).id_number != people[1233].id_number


def test_generation_is_deterministic(tmp_path):
    a = write_sql(f"sqlite:///{tmp_path / 'a.db'}", residents=N, seed=4, dirty=0.1, register=True)
    b = write_sql(f"sqlite:///{tmp_path / 'b.db'}", residents=N, seed=4, dirty=0.1, register=True)
    assert a == b == {}                                    # no mapping_dir, no mappings
    da, db = _dump(f"sqlite:///{tmp_path / 'a.db'}"), _dump(f"sqlite:///{tmp_path / 'b.db'}")
    assert da == db
    assert set(da) == {"resident", "tax_annual", "ss_person", "ss_monthly", "re_property", "vehicle",
                       "med_stay", "disability_cert"}
    assert all(da[t] for t in da), "every table has rows"
    other = _dump(f"sqlite:///{tmp_path / 'a.db'}")
    write_sql(f"sqlite:///{tmp_path / 'c.db'}", residents=N, seed=5)
    assert _dump(f"sqlite:///{tmp_path / 'c.db'}")["vehicle"] != other["vehicle"]


def test_departments_do_not_depend_on_each_other(tmp_path):
    write_sql(f"sqlite:///{tmp_path / 'all.db'}", residents=N, seed=4)
    write_sql(f"sqlite:///{tmp_path / 'one.db'}", residents=N, seed=4, departments=["vehicles"])
    assert _dump(f"sqlite:///{tmp_path / 'all.db'}")["vehicle"] == _dump(f"sqlite:///{tmp_path / 'one.db'}")["vehicle"]


def test_dirty_identities_are_mostly_valid_variants(tmp_path):
    maps = write_sql(f"sqlite:///{tmp_path / 'd.db'}", residents=N, seed=4, dirty=0.5, departments=["tax"],
                     mapping_dir=tmp_path)
    raw = [r[1] for r in _dump(f"sqlite:///{tmp_path / 'd.db'}")["tax_annual"]]
    assert any(len(x.strip()) == 15 for x in raw) and any(x != x.strip() for x in raw)
    assert any(not x.isascii() for x in raw)
    reasons = Counter(item.reason for item in open_adapter(maps["tax"]).records() if not isinstance(item, Record))
    assert set(reasons) == {"identity: check digit mismatch"}
    assert 0 < sum(reasons.values()) < len(raw) / 4


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_sql_and_csv_exports_carry_the_same_data(tmp_path, encoding):
    sql_maps = write_sql(f"sqlite:///{tmp_path / 'd.db'}", residents=N, seed=7, dirty=0.2, mapping_dir=tmp_path / "sql")
    csv_maps = write_csv(tmp_path / "csv", residents=N, seed=7, dirty=0.2, encoding=encoding)
    assert set(sql_maps) == set(csv_maps) == set(DEPARTMENTS)
    for dept in DEPARTMENTS:
        load_mapping(sql_maps[dept])          # the generated TOML validates
        sql = _canonical(sql_maps[dept])
        assert sql, dept
        assert sql == _canonical(csv_maps[dept]), dept


@pytest.mark.postgres
def test_postgres_bulk_load_matches_sqlite(tmp_path, pg_url):
    write_sql(f"sqlite:///{tmp_path / 'd.db'}", residents=N, seed=7, dirty=0.2)
    lite = _dump(f"sqlite:///{tmp_path / 'd.db'}")
    maps_pg = write_sql(pg_url, residents=N, seed=7, dirty=0.2, mapping_dir=tmp_path / "pg")
    maps_lite = write_sql(f"sqlite:///{tmp_path / 'e.db'}", residents=N, seed=7, dirty=0.2, mapping_dir=tmp_path / "lite")
    assert {t: len(rows) for t, rows in _dump(pg_url).items()} == {t: len(rows) for t, rows in lite.items()}
    for dept in DEPARTMENTS:
        assert _canonical(maps_pg[dept]) == _canonical(maps_lite[dept]), dept

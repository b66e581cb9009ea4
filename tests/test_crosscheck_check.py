"""The cross-check file and population parsers (node/crosscheck/check.py): properties —
whatever the input, either a parsed check or one ``InvalidArgument`` naming the key, and an
identity number on a population line is never echoed, only its line number."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedui.adapters.idnum import synthetic
from hedui.common.errors import Reason
from hedui.node.crosscheck.check import load_check, read_population
from hedui.node.errors import InvalidArgument

TODAY = dt.date(2026, 11, 20)
BASE = """name = "c"
reference_month = "2026-10"
[population]
file = "pop.csv"
region = "370304001"
[[criteria]]
name = "vehicle"
department = "cheguan"
field = "vehicle_max_price"
op = ">="
value = "100000"
"""


def _write(tmp: Path, text: str, pop: str | None = None):
    (tmp / "c.toml").write_text(text, encoding="utf-8")
    if pop is not None:
        (tmp / "pop.csv").write_text(pop, encoding="utf-8")
    return tmp / "c.toml"


def test_population_lines_by_number_and_towns(tmp_path):
    rng = random.Random(5)
    a, b = synthetic(rng), synthetic(rng)
    bad = a[:17] + ("0" if a[17] != "0" else "1")
    check = load_check(_write(tmp_path, BASE, f"identity,town\n{a},370304002\n\n{bad}\n {b} \n{a}\nnonsense\n"))
    pop = read_population(check, today=TODAY)
    assert pop.people == [a, b] and pop.invalid == [4, 7]
    assert pop.towns == {a: "370304002", b: "370304001"}
    assert check.day == dt.date(2026, 10, 31)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(alphabet="0123456789Xx ,\uff10\uff11\u3000ab", max_size=24), max_size=12), seed=st.integers(0, 2**16))
def test_population_never_echoes_an_identity(tmp_path, lines, seed):
    rng = random.Random(seed)
    ident = synthetic(rng)
    wrong = ident[:17] + ("0" if ident[17] != "0" else "1")
    text = "\n".join([*lines, wrong]) + "\n"
    check = load_check(_write(tmp_path, BASE, text))
    try:
        pop = read_population(check, today=TODAY)
    except InvalidArgument as exc:
        assert exc.reason == Reason.BAD_POPULATION and wrong[:15] not in exc.message
        return
    assert wrong not in pop.people and len(pop.people) + len(pop.invalid) <= len(lines) + 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["name", "reference_month", "op", "value", "department", "region", "operator"]),
       value=st.one_of(st.text(max_size=20), st.integers(), st.booleans()))
def test_check_file_any_value_parses_or_names_the_key(tmp_path, key, value):
    import tomli_w

    doc = {"name": "c", "reference_month": "2026-10", "operator": "S01",
           "population": {"file": "pop.csv", "region": "370304001"},
           "criteria": [{"name": "vehicle", "department": "cheguan", "field": "vehicle_max_price", "op": ">=", "value": "100000"}]}
    if key in ("op", "value", "department"):
        doc["criteria"][0][key] = value
    elif key == "region":
        doc["population"]["region"] = value
    else:
        doc[key] = value
    try:
        load_check(_write(tmp_path, tomli_w.dumps(doc)))
    except InvalidArgument as exc:
        assert exc.reason == Reason.BAD_CRITERION
        assert ("criteria[0]." + key if key in ("op", "value") else key) in exc.message or key == "department"


@pytest.mark.parametrize("text, key", [
    (BASE.replace('op = ">="', 'op = "<"'), "criteria[0].op"),
    (BASE.replace('value = "100000"', 'value = "lots"'), "criteria[0].value"),
    (BASE.replace('reference_month = "2026-10"', 'reference_month = "2026-13"'), "reference_month"),
    (BASE.replace('file = "pop.csv"\n', ''), "population"),
    (BASE.split("[[criteria]]")[0], "criteria"),
    ("name = ", "invalid TOML"),
])
def test_bad_check_files(tmp_path, text, key):
    with pytest.raises(InvalidArgument) as ei:
        load_check(_write(tmp_path, text))
    assert key in ei.value.message and ei.value.message.startswith("c.toml: ")

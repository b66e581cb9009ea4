"""The verification report (核对报告), computed from stored, re-verified evidence.

Every figure in the report comes from a signed answer that verifies against the directory
version the hub used when it asked. A department that did not answer (or whose answer did
not verify) is listed as *unavailable* with the reason, and any conclusion that depends on
it is marked incomplete: it never counts as zero.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import weakref
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select

from hedui.common.clock import DEFAULT_ZONE, fmt_instant, zone
from hedui.common.periods import end_of
from hedui.keys.directory import TrustedDirectory, verify_directory
from hedui.keys.signing import VerifyingKey
from hedui.node.errors import NotFound, VerificationError
from hedui.node.html import render
from hedui.node.store.raw import Prepared
from hedui.node.verification.cases import reference_month_of
from hedui.node.verification.hub_tables import case_answers, case_member_overrides, case_members, cases, directory_history
from hedui.node.verification.protocol import verify_answer
from hedui.node.verification.reckon import KNOWN, Cell, Override, Source, cell_for, money, reckon
from hedui.node.verification.rules import Rules
from hedui.v1 import common_pb2, directory_pb2, lookup_pb2

__all__ = ["build_report", "report_of", "conclusion_of", "render_html", "mask_identity", "load_case", "load_case_on", "sources_of"]

_CENT = Decimal("0.01")


def mask_identity(ident: str) -> str:
    return ident[:6] + "*" * 8 + ident[-4:]


def load_case(engine, case_ref: str) -> dict:
    """Everything stored about a case (evidence as bytes), for reports and exports."""
    with engine.connect() as c:
        return load_case_on(engine, c, case_ref)


def load_case_on(engine, c, case_ref: str, versions: Iterable[int] = ()) -> dict:
    """:func:`load_case` on an open connection ``c`` of ``engine``; ``versions``: directory
    versions to include beyond those of the stored answers (run_case: the one it is using)."""
    k = {"k_case": case_ref}
    case = case_row(c, k)
    if case is None:
        raise NotFound(f"case: got {case_ref[:32]!r}, want an existing case reference")
    members = _MEMBERS.rows(c, k)
    answers = _ANSWERS.rows(c, k)
    overrides = _latest_overrides(_OVERRIDES.rows(c, k))
    dirs = _directories(engine, c, {a.directory_version for a in answers if a.directory_version} | set(versions))
    return {"case": case, "members": members, "answers": answers, "directories": dirs, "overrides": overrides}


# Built once (issue 16 item 3: building a Core statement per call cost more than running it),
# and all but the case's own row run on the driver's cursor (node/store/raw.py: compiled once
# per dialect, SQLAlchemy's own result processors): the reads of every run_case and every
# report. The case row stays on Core on PostgreSQL: its ``Numeric`` column's processor on
# psycopg depends on the column type the cursor reports, which a statement compiled ahead
# does not know.
_K = bindparam("k_case")
_CASE = select(cases).where(cases.c.case_ref == _K)
#: On SQLite the case row too is read on the driver's cursor (its ``Numeric`` processor does
#: not depend on the cursor: every run_case reads it; issue 16).
_CASE_RAW = Prepared(_CASE)
_MEMBERS = Prepared(select(case_members).where(case_members.c.case_ref == _K).order_by(case_members.c.position))
_ANSWERS = Prepared(select(case_answers).where(case_answers.c.case_ref == _K).order_by(case_answers.c.provider))
_OVERRIDES = Prepared(select(case_member_overrides).where(case_member_overrides.c.case_ref == _K)
                      .order_by(case_member_overrides.c.override_id))
_DIRS = select(directory_history.c.version, directory_history.c.envelope).where(directory_history.c.version.in_(bindparam("versions", expanding=True)))
#: engine -> {directory version: its stored envelope}. A version's row is written once and
#: never changed (a second directory under an accepted version is refused, runtime.py), so
#: the bytes read once serve every later report of this process (each report read them all).
_DIR_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def case_row(c, k: dict):
    """The ``cases`` row of ``k["k_case"]`` (None if there is none): a named tuple read on
    the driver's cursor on SQLite, a Core row elsewhere (the same columns and values)."""
    if c.dialect.name == "sqlite":
        rows = _CASE_RAW.rows(c, k)
        return rows[0] if rows else None
    return c.execute(_CASE, k).first()


def _directories(engine, c, versions: set[int]) -> dict[int, bytes]:
    if not versions:
        return {}
    cache = _DIR_CACHE.setdefault(engine, {})
    missing = [v for v in versions if v not in cache]
    if missing:
        for v, env in c.execute(_DIRS, {"versions": missing}):
            cache[v] = bytes(env)
    return {v: cache[v] for v in versions if v in cache}


def _latest_overrides(rows) -> list:
    """The override in force for each member: the latest one recorded."""
    latest = {}
    for r in rows:
        latest[r.position] = r
    return [latest[p] for p in sorted(latest)]


def department_names(dirs: dict[int, bytes]) -> dict[str, str]:
    """code → the department's name (区税务局 …) from the directories the case used, the newest
    name winning; for the print layout's Chinese labels."""
    names: dict[str, str] = {}
    for version in sorted(dirs):
        try:
            d = directory_pb2.Directory.FromString(common_pb2.Envelope.FromString(dirs[version]).payload)
        except Exception:  # a label only; the evidence check reports bad bytes
            continue
        names.update({m.code: m.name for m in d.members if m.name})
    return names


#: The signing keys of directories read from the hub's own store, by the SHA-256 of the stored
#: envelope: a case's report is built at the end of every run (issue 12), and parsing the same
#: directory and its every member key per case cost more than the rest of the report.
_TRUSTED_KEYS: dict[bytes, dict] = {}


def _keys_for(dirs: dict[int, bytes], version: int, authority: VerifyingKey | None) -> dict:
    if authority is None:
        # The hub's own store: it accepted (verified) this directory when it used it.
        raw = dirs[version]
        key = hashlib.sha256(raw).digest()
        keys = _TRUSTED_KEYS.get(key)
        if keys is None:
            env = common_pb2.Envelope.FromString(raw)
            keys = TrustedDirectory(env, directory_pb2.Directory.FromString(env.payload)).signing_keys()
            if len(_TRUSTED_KEYS) > 64:
                _TRUSTED_KEYS.clear()
            _TRUSTED_KEYS[key] = keys
        return dict(keys)
    env = common_pb2.Envelope.FromString(dirs[version])
    # Offline: the directory must verify under the authority key. Expiry was judged at the
    # time of use, so only the signature is checked here (a clock at the epoch).
    epoch = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
    return verify_directory(env, authority, now=epoch).signing_keys()


def verified_answers(data: dict, authority: VerifyingKey | None = None,
                     known: Mapping[str, tuple[bytes, lookup_pb2.LookupAnswer]] | None = None) -> dict[str, dict]:
    """provider -> {"status", "reason", "answer" (LookupAnswer or None), "evidence"}.
    ``known``: provider -> (envelope bytes, answer) that the caller verified itself with
    :func:`verify_answer` against the hub's current directory and stored with that directory's
    version (run_case, just before it builds the report); an answer stored with exactly those
    bytes is taken as verified. Only for the hub's own store (``authority`` None): every
    other report (``hedui case report``, ``case verify``, exports) verifies every answer."""

    out: dict[str, dict] = {}
    keyring: dict[int, dict] = {}  # one directory parse per version, not per answer
    for a in data["answers"]:
        entry = {"status": a.status, "reason": a.reason or "", "answer": None, "evidence": None, "signer": None}
        if a.status == "ok":
            try:
                if a.directory_version not in keyring:
                    keyring[a.directory_version] = _keys_for(data["directories"], a.directory_version, authority)
                keys = keyring[a.directory_version]
                first = getattr(a, "filter_first", None)
                if first:
                    entry["first"] = _verified_filter(keys, a.provider, a.epoch, first)
                    entry["evidence"] = entry["first"]["evidence"]
                    entry["directory_version"] = a.directory_version
                if a.envelope:
                    raw = bytes(a.envelope)
                    env = common_pb2.Envelope.FromString(raw)
                    seen = known.get(a.provider) if known is not None and authority is None else None
                    if seen is not None and seen[0] == raw:
                        ans = seen[1]
                    else:
                        tokens = [bytes(a.tokens[i:i + 64]) for i in range(0, len(a.tokens), 64)]
                        ans = verify_answer(keys, a.provider, env, bytes(a.request_digest), tokens)
                    entry["answer"] = ans
                    entry["evidence"] = hashlib.sha256(env.payload).hexdigest()[:16]
                    entry["signer"] = env.signatures[0].keyid
                    entry["directory_version"] = a.directory_version
                elif not first:
                    raise ValueError("no answer")
            except (VerificationError, KeyError, ValueError) as exc:
                entry.update(status="bad_signature", reason=f"evidence does not verify: {getattr(exc, 'reason', type(exc).__name__)}")
        out[a.provider] = entry
    return out


def _verified_filter(keys, provider: str, epoch, first: str) -> dict:
    """A filter-first row (issue 14): the signed filter header it cites, verified against the
    department's key of that directory version, and which member positions were asked."""
    import base64
    import json

    from hedui.node.crosscheck.wire import header_digest, verify_header

    doc = json.loads(first)
    env = common_pb2.Envelope.FromString(base64.b64decode(doc["filter"]))
    header = verify_header(env, keys, provider, epoch=int(epoch))
    digest = header_digest(env).hex()
    if digest != doc["digest"] or header.data_date.isoformat() != doc["data_date"]:
        raise VerificationError("filter_first: the cited filter differs from the signed header")
    return {"positions": [int(p) for p in doc["positions"]], "fields": list(doc["fields"]), "count": int(doc["count"]),
            "data_date": doc["data_date"], "evidence": "filter:" + digest[:16]}


_STATES = {
    lookup_pb2.ANSWER_STATE_VALUE: "value", lookup_pb2.ANSWER_STATE_NO_VALUE: "no_value",
    lookup_pb2.ANSWER_STATE_NO_RECORD: "no_record", lookup_pb2.ANSWER_STATE_NOT_CURRENT: "not_current",
}


def _state(found: bool, fa: lookup_pb2.FieldAnswer) -> str:
    """The answer state; a provider from before issue 12 sends none: its ``found``/``present``."""
    if fa.state in _STATES:
        return _STATES[fa.state]
    if not found:
        return "no_record"
    return "value" if fa.present else "no_value"


def sources_of(ans: dict[str, dict]) -> dict[str, Source]:
    """The verified answers as the report's :class:`~reckon.Source` values."""
    out = {}
    for prov, e in ans.items():
        a = e["answer"]
        cells: dict[tuple[int, str], Cell] = {}
        first = e.get("first")
        where = first["positions"] if first else None
        if first:
            # Members outside the signed filter: no record as of its data date (issue 14).
            for pos in set(range(first["count"])) - set(where):
                for f in first["fields"]:
                    cells[(pos, f)] = Cell("no_record", "", "", "", "", first["data_date"], first["evidence"])
        if a is not None:
            ev = e["evidence"]
            for i, ta in enumerate(a.members):
                pos = where[i] if where is not None else i
                for fa in ta.fields:
                    state = _state(ta.found, fa)
                    cells[(pos, fa.field)] = Cell(state, fa.value if state == "value" else "", fa.unit, fa.window,
                                                  fa.as_of, fa.data_date, ev)
        out[prov] = Source(e["status"], e["reason"], e["evidence"], e["signer"], cells)
    return out


def _answer_table(ans: dict[str, dict]) -> list[dict]:
    """Every answered cell as signed (member × department × field), for the evidence annex."""
    table = []
    for prov, e in sorted(ans.items()):
        a = e["answer"]
        first = e.get("first")
        if first:
            for pos in sorted(set(range(first["count"])) - set(first["positions"])):
                for f in first["fields"]:
                    table.append({"member": pos, "provider": prov, "field": f, "found": False, "state": "no_record",
                                  "present": False, "value": None, "unit": "", "window": None, "as_of": None,
                                  "data_date": first["data_date"], "evidence": first["evidence"], "signer": e["signer"]})
        if a is None:
            continue
        for i, ta in enumerate(a.members):
            pos = first["positions"][i] if first else i
            for fa in ta.fields:
                table.append({
                    "member": pos, "provider": prov, "field": fa.field, "found": ta.found, "state": _state(ta.found, fa),
                    "present": fa.present, "value": fa.value if fa.present else None, "unit": fa.unit,
                    "window": fa.window or None, "as_of": fa.as_of or None, "data_date": fa.data_date or None,
                    "evidence": e["evidence"], "signer": e["signer"],
                })
    return table


def _temporary_assistance(rules: Rules, case, sources: dict[str, Source], n: int) -> dict | None:
    ta = rules.temporary_assistance
    if ta is None or case.expenditure is None:
        return None
    exp = Decimal(case.expenditure)
    cells = [cell_for(sources, ta.provider, ta.field, pos) for pos in range(n)]
    if any(c.state not in KNOWN for c in cells):
        return {"expenditure": str(exp), "state": "unknown", "reason": f"{ta.provider}.{ta.field} not known"}
    last_year = sum((money(c) for c in cells), Decimal(0))
    pc = last_year / n
    ratio = (exp / pc) if pc > 0 else None
    tier = None
    for t in ta.tiers:
        if (ratio is None and t.upto is None) or (ratio is not None and ratio > t.over and (t.upto is None or ratio <= t.upto)):
            tier = t
            break
    return {
        "expenditure": str(exp.quantize(_CENT)), "last_year_per_capita": str(pc.quantize(_CENT, ROUND_HALF_UP)),
        "ratio": None if ratio is None else str(ratio.quantize(Decimal("0.001"), ROUND_HALF_UP)),
        "state": "tier" if tier else "below_tiers",
        "aid": tier.aid if tier else "支出未超过上年人均收入，不属于支出型临时救助",
        "min_cny": str(tier.min_cny) if tier and tier.min_cny is not None else None,
        "max_cny": str(tier.max_cny) if tier and tier.max_cny is not None else None,
    }


def build_report(engine, case_ref: str, rules: Rules, *, authority: VerifyingKey | None = None,
                 tz: ZoneInfo | None = None, known: Mapping[str, tuple[bytes, lookup_pb2.LookupAnswer]] | None = None) -> dict:
    """The report of a case (JSON-able); ``tz`` is the federation zone (default China
    Standard Time) in which dates are read and shown; ``known``: answers the caller has just
    verified (:func:`verified_answers`)."""
    return report_of(load_case(engine, case_ref), rules, authority=authority, tz=tz, known=known)


def _reckoned(data: dict, rules: Rules, authority: VerifyingKey | None, tz: ZoneInfo,
              known: Mapping[str, tuple[bytes, lookup_pb2.LookupAnswer]] | None, *, conclusion_only: bool = False) -> tuple:
    """What a report concludes from: the verified answers, their cells, the reference month,
    the overrides in force and the reckoned figures (``complete``, ``missing`` …; only those
    two with ``conclusion_only``)."""
    case = data["case"]
    ans = verified_answers(data, authority, known)
    sources = sources_of(ans)
    month = reference_month_of(case, tz)
    overrides = {o.position: Override(bool(o.counted), o.reason, o.operator) for o in data["overrides"]}
    figures = reckon(rules, sources, len(data["members"]), overrides, rules.standard_for(case.region, month),
                     conclusion_only=conclusion_only)
    return ans, sources, month, overrides, figures


def conclusion_of(data: dict, rules: Rules, *, tz: ZoneInfo | None = None,
                  known: Mapping[str, tuple[bytes, lookup_pb2.LookupAnswer]] | None = None) -> tuple[bool, list[dict]]:
    """Whether :func:`report_of` of the same arguments concludes ``complete``, and its
    ``missing`` list, without building the rest of the report (the evidence table, labels,
    masked identities): ``run_case`` decides the case's status from this at the end of every
    run (issue 16). The same computation as the report's, so the two cannot disagree."""
    figures = _reckoned(data, rules, None, tz or zone(DEFAULT_ZONE), known, conclusion_only=True)[4]
    return bool(figures["complete"]), list(figures["missing"])


def report_of(data: dict, rules: Rules, *, authority: VerifyingKey | None = None, tz: ZoneInfo | None = None,
              known: Mapping[str, tuple[bytes, lookup_pb2.LookupAnswer]] | None = None) -> dict:
    """:func:`build_report` of what :func:`load_case` returns — or of the same built in
    memory by ``run_case`` from what it read and is about to store (issue 16: the case's
    status is decided before its one commit, without reading the case back)."""
    tz = tz or zone(DEFAULT_ZONE)
    case = data["case"]
    members = data["members"]
    n = len(members)
    ans, sources, month, overrides, figures = _reckoned(data, rules, authority, tz, known)
    for row, m in zip(figures["members"], members, strict=True):
        row.update(identity=mask_identity(m.identity), relation=m.relation)
        o = overrides.get(m.position)
        row["override"] = None if o is None else {"counted": o.counted, "reason": o.reason, "operator": o.operator}
    unavailable = [{"provider": p, "status": e["status"], "reason": e["reason"]} for p, e in sorted(ans.items()) if e["answer"] is None]
    figures["departments"] = department_names(data["directories"])
    return {
        "case_ref": case.case_ref,
        "purpose": case.purpose,
        "region": case.region,
        "operator": case.operator,
        "time_zone": tz.key,
        "reference_month": str(month),
        "income_window": f"{month.plus(-12)}..{month.plus(-1)}",
        "as_of": end_of(month).isoformat(),
        "created_at": fmt_instant(case.created_at, tz) if case.created_at else None,
        "run_at": fmt_instant(case.run_at, tz) if case.run_at else None,
        "household_size": n,
        **figures,
        "temporary_assistance": _temporary_assistance(rules, case, sources, n),
        "fields": _answer_table(ans),
        "unavailable": unavailable,
        "providers": {p: {"status": e["status"], "evidence": e["evidence"], "signer": e["signer"]} for p, e in sorted(ans.items())},
        "conclusion": "complete" if figures["complete"] else "incomplete",
    }


_LABELS = {
    "zh": {
        "title": "居民家庭经济状况核对报告", "case": "案件编号", "purpose": "核对事项", "region": "行政区划", "operator": "经办人",
        "run_at": "核对时间", "zone": "时区", "reference_month": "核对基准月", "income_window": "收入计算期间",
        "as_of": "财产及状态截至", "members": "家庭成员", "relation": "关系", "identity": "身份证号（脱敏）",
        "counting": "是否计入家庭人口", "counted": "计入", "not_counted": "不计入", "pending": "待定（户籍状态未知）",
        "fields": "各部门答复明细（证据）", "member": "成员", "provider": "部门", "field": "项目", "value": "数值",
        "window": "期间", "data_date": "数据截至", "state": "状态", "evidence": "证据编号", "signer": "签名",
        "income": "收入核算", "income_items": "各成员收入明细", "item": "收入项目", "totals": "家庭收入合计",
        "total": "家庭年收入合计", "monthly_total": "家庭月收入", "deductions": "月扣减", "per_capita": "家庭月人均收入",
        "standard": "当地低保标准", "below": "低于标准", "above": "不低于标准", "undetermined": "无法判断（核对不完整）",
        "assets": "财产核查", "rule": "规则", "triggered": "触发成员", "set": "命中", "clear": "未命中",
        "unknown": "未知（核对不完整）", "info": "参考信息（不作为结论依据）", "temp": "临时救助档次",
        "expenditure": "一次性必需支出", "ratio": "支出/上年人均收入", "aid": "救助标准", "unavailable": "未响应部门",
        "reason": "原因", "conclusion": "结论", "complete": "核对完整", "missing": "缺失项目",
        "incomplete": "核对不完整：以下项目缺失，不计算家庭收入、人均收入及财产结论",
        "signature": "签字", "checker": "核对人", "reviewer": "复核人", "date": "日期",
        "footer": "本报告各项数据均来自部门签名答复，可用 hedui case verify 离线复核。",
        "purposes": {"dibao": "最低生活保障", "tekun": "特困人员供养", "temporary_assistance": "临时救助",
                     "periodic_review": "定期复核"},
        "states": {"value": "有数据", "no_value": "无数据", "no_record": "无记录", "not_current": "数据未更新至该期间",
                   "unavailable": "部门未响应", "refused": "部门拒绝", "not_answered": "部门未提供该项",
                   "bad_value": "数值无法识别", "no_counted_member": "无计入人口", "no_standard": "无适用标准",
                   "counted_unknown": "计入人口未确定"},
        "reasons": {"dead": "死亡", "moved_out": "迁出", "no_registry_record": "户籍无记录", "override": "经办人调整"},
    },
    "en": {
        "title": "Household economic status verification report", "case": "Case", "purpose": "Purpose", "region": "Region",
        "operator": "Operator", "run_at": "Run at", "zone": "Time zone", "reference_month": "Reference month",
        "income_window": "Income window", "as_of": "Assets and statuses as of", "members": "Household members",
        "relation": "Relation", "identity": "Identity (masked)", "counting": "Counted", "counted": "counted",
        "not_counted": "not counted", "pending": "undetermined (registry unknown)", "fields": "Answers by department (evidence)",
        "member": "Member", "provider": "Department", "field": "Field", "value": "Value", "window": "Window",
        "data_date": "Data date", "state": "State", "evidence": "Evidence", "signer": "Signer", "income": "Income",
        "income_items": "Income items by member", "item": "Item", "totals": "Household totals", "total": "Annual total",
        "monthly_total": "Monthly income", "deductions": "Monthly deductions", "per_capita": "Per-capita monthly income",
        "standard": "Local dibao standard", "below": "below standard", "above": "not below standard",
        "undetermined": "undetermined (incomplete)", "assets": "Assets", "rule": "Rule", "triggered": "Triggered by",
        "set": "SET", "clear": "clear", "unknown": "unknown (incomplete)", "info": "For information (never concluding)",
        "temp": "Temporary assistance tier", "expenditure": "One-off expenditure",
        "ratio": "Expenditure / last year's per-capita income", "aid": "Aid", "unavailable": "Unavailable departments",
        "reason": "Reason", "conclusion": "Conclusion", "complete": "complete", "missing": "Missing",
        "incomplete": "INCOMPLETE: the items below are missing; no income, per-capita or asset conclusion",
        "signature": "Signatures", "checker": "Checked by", "reviewer": "Reviewed by", "date": "Date",
        "footer": "Every figure comes from a signed department answer; re-check offline with `hedui case verify`.",
        "purposes": {},
        "states": {"value": "value", "no_value": "no value", "no_record": "no record", "not_current": "not current",
                   "unavailable": "unavailable", "refused": "refused", "not_answered": "not offered",
                   "bad_value": "unreadable value", "no_counted_member": "no counted member", "no_standard": "no standard",
                   "counted_unknown": "counted members unknown"},
        "reasons": {"dead": "dead", "moved_out": "moved out", "no_registry_record": "no registry record",
                    "override": "caseworker override"},
    },
}


def render_html(report: dict, lang: str = "zh") -> str:
    """The print layout (A4): Chinese labels by default, the federation zone, the signature block."""
    return render("case-report.html", r=report, L=_LABELS["en" if lang == "en" else "zh"], lang=lang)

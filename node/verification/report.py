"""The verification report (核对报告), computed from stored, re-verified evidence.

Every figure in the report comes from a signed answer that verifies against the directory
version the hub used when it asked. A department that did not answer (or whose answer did
not verify) is listed as *unavailable* with the reason, and any conclusion that depends on
it is marked incomplete: it never counts as zero.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select

from hedui.keys.directory import TrustedDirectory, verify_directory
from hedui.keys.signing import VerifyingKey
from hedui.node.errors import NotFound, VerificationError
from hedui.node.html import render
from hedui.node.verification.hub_tables import case_answers, case_members, cases, directory_history
from hedui.node.verification.protocol import verify_answer
from hedui.node.verification.rules import AssetFlag, Rules
from hedui.v1 import common_pb2, directory_pb2

__all__ = ["build_report", "render_html", "mask_identity", "load_case"]

_CENT = Decimal("0.01")


def mask_identity(ident: str) -> str:
    return ident[:6] + "*" * 8 + ident[-4:]


def load_case(engine, case_ref: str) -> dict:
    """Everything stored about a case (evidence as bytes), for reports and exports."""
    with engine.connect() as c:
        case = c.execute(select(cases).where(cases.c.case_ref == case_ref)).first()
        if case is None:
            raise NotFound(f"case: got {case_ref[:32]!r}, want an existing case reference")
        members = c.execute(select(case_members).where(case_members.c.case_ref == case_ref).order_by(case_members.c.position)).all()
        answers = c.execute(select(case_answers).where(case_answers.c.case_ref == case_ref).order_by(case_answers.c.provider)).all()
        versions = {a.directory_version for a in answers if a.directory_version}
        dirs = {r.version: bytes(r.envelope) for r in c.execute(select(directory_history).where(directory_history.c.version.in_(versions)))} if versions else {}
    return {"case": case, "members": members, "answers": answers, "directories": dirs}


def _keys_for(dirs: dict[int, bytes], version: int, authority: VerifyingKey | None) -> dict:
    env = common_pb2.Envelope.FromString(dirs[version])
    if authority is None:
        # The hub's own store: it accepted (verified) this directory when it used it.
        return TrustedDirectory(env, directory_pb2.Directory.FromString(env.payload)).signing_keys()
    # Offline: the directory must verify under the authority key. Expiry was judged at the
    # time of use, so only the signature is checked here (a clock at the epoch).
    epoch = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
    return verify_directory(env, authority, now=epoch).signing_keys()


def verified_answers(data: dict, authority: VerifyingKey | None = None) -> dict[str, dict]:
    """provider -> {"status", "reason", "answer" (LookupAnswer or None), "evidence"}."""

    out: dict[str, dict] = {}
    for a in data["answers"]:
        entry = {"status": a.status, "reason": a.reason or "", "answer": None, "evidence": None, "signer": None}
        if a.status == "ok":
            try:
                env = common_pb2.Envelope.FromString(bytes(a.envelope))
                keys = _keys_for(data["directories"], a.directory_version, authority)
                tokens = [bytes(a.tokens[i:i + 64]) for i in range(0, len(a.tokens), 64)]
                ans = verify_answer(keys, a.provider, env, bytes(a.request_digest), tokens)
                entry["answer"] = ans
                entry["evidence"] = hashlib.sha256(env.payload).hexdigest()[:16]
                entry["signer"] = env.signatures[0].keyid
                entry["directory_version"] = a.directory_version
            except (VerificationError, KeyError, ValueError) as exc:
                entry.update(status="bad_signature", reason=f"evidence does not verify: {getattr(exc, 'reason', type(exc).__name__)}")
        out[a.provider] = entry
    return out


def _dec(s: str) -> Decimal:
    return Decimal(s)


def build_report(engine, case_ref: str, rules: Rules, *, authority: VerifyingKey | None = None) -> dict:
    data = load_case(engine, case_ref)
    case = data["case"]
    members = data["members"]
    n = len(members)
    ans = verified_answers(data, authority)

    # values[(provider, field)][position] = (present, value, as_of)
    values: dict[tuple[str, str], dict[int, tuple[bool, str, str]]] = {}
    table = []
    for prov, e in sorted(ans.items()):
        a = e["answer"]
        if a is None:
            continue
        for pos, ta in enumerate(a.members):
            for fa in ta.fields:
                values.setdefault((prov, fa.field), {})[pos] = (fa.present, fa.value, fa.as_of)
                table.append({
                    "member": pos, "provider": prov, "field": fa.field, "found": ta.found,
                    "present": fa.present, "value": fa.value if fa.present else None, "unit": fa.unit,
                    "as_of": fa.as_of or None, "evidence": e["evidence"], "signer": e["signer"],
                })
    unavailable = [{"provider": p, "status": e["status"], "reason": e["reason"]} for p, e in sorted(ans.items()) if e["answer"] is None]
    bad = {u["provider"] for u in unavailable}

    def item_sum(items) -> tuple[Decimal, list[str], list[dict]]:
        total, missing, per = Decimal(0), [], []
        for it in items:
            if it.provider in bad or (it.provider, it.field) not in values and it.provider not in ans:
                missing.append(f"{it.provider}.{it.field}")
                continue
            for pos in range(n):
                present, v, _ = values.get((it.provider, it.field), {}).get(pos, (False, "", ""))
                if present:
                    monthly = _dec(v) / it.months
                    total += monthly
                    per.append({"member": pos, "item": it.label or it.field, "monthly": str(monthly.quantize(_CENT, ROUND_HALF_UP))})
        return total, missing, per

    income, miss_i, per_income = item_sum(rules.income)
    deductions, miss_d, per_ded = item_sum(rules.deductions)
    standard = rules.standard_for(case.region)
    net = max(income - deductions, Decimal(0))
    per_capita = (net / n).quantize(_CENT, ROUND_HALF_UP)
    income_complete = not (miss_i or miss_d)

    flags = []
    for af in rules.assets:
        if af.provider in bad or af.provider not in ans:
            flags.append({"flag": af.flag, "label": af.label, "state": "unknown", "reason": f"{af.provider} unavailable"})
            continue
        vals = values.get((af.provider, af.field), {})
        nums = {pos: _dec(v) for pos, (p, v, _) in vals.items() if p}

        def hit(x: Decimal, af: AssetFlag = af) -> bool:
            return x >= af.threshold if af.op == ">=" else x == af.threshold

        if af.scope == "household":
            state = hit(sum(nums.values(), Decimal(0)))
            who = sorted(nums)
        else:
            who = sorted(pos for pos, x in nums.items() if hit(x))
            state = bool(who)
        flags.append({"flag": af.flag, "label": af.label, "state": "set" if state else "clear",
                      "members": who if state else [], "threshold": str(af.threshold), "op": af.op})

    temp = None
    ta = rules.temporary_assistance
    if ta is not None and case.expenditure is not None:
        exp = Decimal(case.expenditure)
        if ta.provider in bad or ta.provider not in ans:
            temp = {"expenditure": str(exp), "state": "unknown", "reason": f"{ta.provider} unavailable"}
        else:
            vals = values.get((ta.provider, ta.field), {})
            last_year = sum((_dec(v) for p, v, _ in vals.values() if p), Decimal(0))
            pc = last_year / n
            ratio = (exp / pc) if pc > 0 else None
            tier = None
            for t in ta.tiers:
                if (ratio is None and t.upto is None) or (ratio is not None and ratio > t.over and (t.upto is None or ratio <= t.upto)):
                    tier = t
                    break
            temp = {
                "expenditure": str(exp.quantize(_CENT)), "last_year_per_capita": str(pc.quantize(_CENT, ROUND_HALF_UP)),
                "ratio": None if ratio is None else str(ratio.quantize(Decimal("0.001"), ROUND_HALF_UP)),
                "state": "tier" if tier else "below_tiers",
                "aid": tier.aid if tier else "支出未超过上年人均收入，不属于支出型临时救助",
                "min_cny": str(tier.min_cny) if tier and tier.min_cny is not None else None,
                "max_cny": str(tier.max_cny) if tier and tier.max_cny is not None else None,
            }

    complete = not unavailable
    return {
        "case_ref": case.case_ref,
        "purpose": case.purpose,
        "region": case.region,
        "operator": case.operator,
        "created_at": case.created_at.isoformat() if case.created_at else None,
        "run_at": case.run_at.isoformat() if case.run_at else None,
        "members": [{"position": m.position, "identity": mask_identity(m.identity), "relation": m.relation} for m in members],
        "household_size": n,
        "fields": table,
        "income": {
            "monthly_total": str(income.quantize(_CENT, ROUND_HALF_UP)),
            "monthly_deductions": str(deductions.quantize(_CENT, ROUND_HALF_UP)),
            "per_capita_monthly": str(per_capita),
            "standard": str(standard),
            "below_standard": (per_capita < standard) if income_complete else None,
            "complete": income_complete,
            "missing": miss_i + miss_d,
            "items": per_income,
            "deduction_items": per_ded,
        },
        "assets": flags,
        "temporary_assistance": temp,
        "unavailable": unavailable,
        "providers": {p: {"status": e["status"], "evidence": e["evidence"], "signer": e["signer"]} for p, e in sorted(ans.items())},
        "conclusion": "complete" if complete else "incomplete",
    }


_LABELS = {
    "zh": {
        "title": "居民家庭经济状况核对报告", "case": "案件编号", "purpose": "核对事项", "region": "行政区划", "operator": "经办人",
        "run_at": "核对时间", "members": "家庭成员", "relation": "关系", "identity": "身份证号（脱敏）", "fields": "各部门核对结果",
        "member": "成员", "provider": "部门", "field": "项目", "value": "数值", "as_of": "截至", "evidence": "证据", "signer": "签名",
        "no_record": "无记录", "income": "收入核算", "per_capita": "家庭月人均收入", "standard": "当地低保标准",
        "below": "低于标准", "above": "不低于标准", "undetermined": "无法判断（部门未响应）", "assets": "财产核查",
        "set": "命中", "clear": "未命中", "unknown": "未知", "temp": "临时救助档次", "expenditure": "一次性必需支出",
        "ratio": "支出/上年人均收入", "aid": "救助标准", "unavailable": "未响应部门", "reason": "原因",
        "conclusion": "结论", "complete": "核对完整", "incomplete": "核对不完整：部分部门未响应，结论待补充",
        "footer": "本报告各项数据均来自部门签名答复，可用 hedui case verify 离线复核。",
    },
    "en": {
        "title": "Household economic status verification report", "case": "Case", "purpose": "Purpose", "region": "Region",
        "operator": "Operator", "run_at": "Run at", "members": "Household members", "relation": "Relation",
        "identity": "Identity (masked)", "fields": "Answers by department", "member": "Member", "provider": "Department",
        "field": "Field", "value": "Value", "as_of": "As of", "evidence": "Evidence", "signer": "Signer", "no_record": "no record",
        "income": "Income", "per_capita": "Per-capita monthly income", "standard": "Local dibao standard",
        "below": "below standard", "above": "not below standard", "undetermined": "undetermined (department unavailable)",
        "assets": "Assets", "set": "SET", "clear": "clear", "unknown": "unknown", "temp": "Temporary assistance tier",
        "expenditure": "One-off expenditure", "ratio": "Expenditure / last year's per-capita income", "aid": "Aid",
        "unavailable": "Unavailable departments", "reason": "Reason", "conclusion": "Conclusion", "complete": "complete",
        "incomplete": "INCOMPLETE: some departments did not answer",
        "footer": "Every figure comes from a signed department answer; re-check offline with `hedui case verify`.",
    },
}


def render_html(report: dict, lang: str = "zh") -> str:
    return render("case-report.html", r=report, L=_LABELS["en" if lang == "en" else "zh"], lang=lang)

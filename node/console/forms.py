"""Server-side validation of the console's forms, with the same validators as the CLI
(:func:`hedui.adapters.idnum.normalize` for identity numbers, the domain's own checks for the
rest), and messages in the operator's language that never repeat a number back into a log.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

from hedui.node.console import hub_api
from hedui.node.console.i18n import CODES, Translator

__all__ = ["IdCheck", "id_check", "CaseForm", "parse_case_form", "parse_members_file", "check_consent", "RELATIONS",
           "previous_month", "size_text"]

RELATIONS = tuple(CODES["relation"])
_REGION = re.compile(r"\d{6}|\d{9}|\d{12}")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_MAX_MEMBERS = 20
# The validator's messages (hedui.adapters.idnum) → the console's message keys.
_ID_MESSAGES = (("check digit", "id.check"), ("birth date", "id.birth"), ("non-digit", "id.chars"),
                ("last character", "id.last"), ("characters, want 15 or 18", "id.length"))


@dataclass
class IdCheck:
    ok: bool
    normalized: str = ""
    message: str = ""


def id_check(raw: str, t: Translator) -> IdCheck:
    text = (raw or "").strip()
    if not text:
        return IdCheck(False, message=t("id.empty"))
    try:
        norm = hub_api.normalize(text)
    except hub_api.InvalidIdentity as exc:
        key = next((k for needle, k in _ID_MESSAGES if needle in exc.message), None)
        folded = re.sub(r"\s", "", text)
        return IdCheck(False, message=t(key, n=len(folded)) if key else exc.message)
    if len(re.sub(r"\s", "", text)) == 15:
        return IdCheck(True, norm, t("id.converted", id=norm))
    if norm != text:
        return IdCheck(True, norm, t("id.repaired", id=norm))
    return IdCheck(True, norm, t("id.ok"))


def size_text(n: int) -> str:
    return f"{n / 1048576:.0f} MB" if n >= 1048576 else f"{n // 1024} KB"


def previous_month(today: date) -> str:
    y, m = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{y:04d}-{m:02d}"


@dataclass
class CaseForm:
    purpose: str = ""
    region: str = ""
    reference_month: str = ""
    expenditure: str = ""
    members: list[dict] = field(default_factory=list)  # {"identity", "relation", "check": IdCheck | None}
    errors: list[str] = field(default_factory=list)  # the case's own fields
    member_errors: list[str] = field(default_factory=list)
    expenditure_value: Decimal | None = None
    normalized: list[tuple[str, str]] = field(default_factory=list)

    @property
    def all_errors(self) -> list[str]:
        return self.errors + self.member_errors


def parse_case_form(form, t: Translator, today: date, *, members: list[tuple[str, str]] | None = None) -> CaseForm:
    """The intake fields; ``members`` given (from an uploaded list) instead of the typed rows."""
    f = CaseForm(purpose=str(form.get("purpose", "")), region=str(form.get("region", "")).strip(),
                 reference_month=str(form.get("reference_month", "")).strip(),
                 expenditure=str(form.get("expenditure", "")).strip())
    if f.purpose not in hub_api.CASE_PURPOSES:
        f.errors.append(t("val.purpose"))
    if not _REGION.fullmatch(f.region):
        f.errors.append(t("val.region"))
    if f.reference_month:
        m = _MONTH.fullmatch(f.reference_month)
        if not m or not 1 <= int(m.group(2)) <= 12 or (int(m.group(1)), int(m.group(2))) > (today.year, today.month) \
                or int(m.group(1)) < 2000:
            f.errors.append(t("val.month"))
    if f.expenditure:
        try:
            v = Decimal(f.expenditure)
            if not v.is_finite() or v < 0 or v > Decimal("1e9"):
                raise InvalidOperation
            f.expenditure_value = v
        except InvalidOperation:
            f.errors.append(t("val.expenditure"))
    if members is None:
        ids, rels = form.getlist("identity"), form.getlist("relation")
        members = [(str(i), str(rels[k]) if k < len(rels) else "member") for k, i in enumerate(ids)]
        members = [(i, r) for i, r in members if i.strip()]
    if not 1 <= len(members) <= _MAX_MEMBERS:
        f.member_errors.append(t("val.members"))
    seen: dict[str, int] = {}
    for n, (raw, rel) in enumerate(members, start=1):
        rel = rel if rel in RELATIONS else "member"
        chk = id_check(raw, t)
        if chk.ok and chk.normalized in seen:
            chk = IdCheck(False, message=t("id.dup", n=seen[chk.normalized]))
        if chk.ok:
            seen[chk.normalized] = n
            f.normalized.append((chk.normalized, rel))
        else:
            f.member_errors.append(f"{t('new.member_n', n=n)}：{chk.message}")
        f.members.append({"identity": raw, "relation": rel, "check": chk})
    return f


def parse_members_file(filename: str, data: bytes, t: Translator) -> tuple[list[tuple[str, str]], list[str]]:
    """A CSV (UTF-8, UTF-8 with BOM or GBK) or .xlsx list: identity, relation; header optional.
    Relations may be codes (spouse) or their Chinese labels (配偶)."""
    name = (filename or "").lower()
    rows: list[list[str]] = []
    if name.endswith(".csv"):
        for enc in ("utf-8-sig", "gbk"):
            try:
                text = data.decode(enc)
                break
            except UnicodeDecodeError:
                continue
        else:
            return [], [t("val.file_encoding")]
        rows = [r for r in csv.reader(io.StringIO(text))]
    elif name.endswith(".xlsx"):
        try:
            from openpyxl import load_workbook

            wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            rows = [["" if v is None else str(v) for v in r[:2]] for r in wb.worksheets[0].iter_rows(values_only=True)]
            wb.close()
        except Exception:
            return [], [t("val.file_bad")]
    else:
        return [], [t("val.file_type")]
    by_label = {zh: code for code, (zh, _) in CODES["relation"].items()} | {code: code for code in RELATIONS}
    out, errors = [], []
    for i, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row] + ["", ""]
        if not cells[0] or cells[0].lower() in ("identity", "身份证号", "身份证号码"):
            continue
        rel = by_label.get(cells[1], "member") if cells[1] else "member"
        chk = id_check(cells[0], t)
        if not chk.ok:
            errors.append(t("val.row", row=i, msg=chk.message))
        out.append((cells[0], rel))
    return out, errors


def check_consent(data: bytes | None, t: Translator, limit: int) -> tuple[bytes | None, str]:
    """The 授权书 scan: a PDF within the size limit; its SHA-256 is the consent digest."""
    if not data:
        return None, t("val.consent_missing")
    if len(data) > limit:
        return None, t("val.consent_large", limit=size_text(limit))
    if not data.lstrip(b"\r\n\t ")[:5] == b"%PDF-":
        return None, t("val.consent_pdf")
    return hashlib.sha256(data).digest(), ""

"""What a person reads in the console: Chinese by default, English on request.

One table of ``key -> (zh, en)``; codes (purposes, relations, statuses, outcomes, event types,
detail fields) have labels here too, and department names come from the signed directory.
A key without a translation shows the key itself, so a missing label is visible, not blank.
"""

from __future__ import annotations

__all__ = ["LANGS", "Translator", "MESSAGES", "CODES"]

LANGS = ("zh", "en")

MESSAGES: dict[str, tuple[str, str]] = {
    "app.title": ("核对工作台", "Verification console"),
    "app.org": ("社会救助家庭经济状况核对", "Household economic status verification"),
    "nav.cases": ("核对案件", "Cases"), "nav.new_case": ("新建核对", "New case"), "nav.leads": ("主动发现线索", "Leads"),
    "nav.referrals": ("转办单", "Referrals"), "nav.monthly": ("工作月报", "Monthly report"),
    "nav.crosscheck": ("大数据比对", "Cross-checks"),
    "cc.title": ("大数据比对结果", "Cross-check results"), "cc.none": ("还没有比对记录。", "No cross-check has run yet."),
    "cc.name": ("比对名称", "Check"), "cc.month": ("基准月", "Reference month"), "cc.as_of": ("截至", "As of"),
    "cc.operator": ("下达人", "Ordered by"), "cc.population": ("比对人数", "Population"),
    "cc.invalid": ("无效身份证号行数", "Invalid identity lines"), "cc.hits": ("命中人数", "People hit"),
    "cc.by_reason": ("按原因", "By reason"), "cc.ran_at": ("运行时间", "Ran at"), "cc.count_only": ("仅统计", "counts only"),
    "cc.count_only_note": ("本次为仅统计比对：只保留各原因的命中人数，不保留任何人员，不生成线索。",
                           "A counts-only run: only the number of hits per reason is kept; nobody's identity, no lead."),
    "cc.reason": ("命中原因", "Reason"), "cc.rule": ("比对规则", "Rule"), "cc.all_reasons": ("全部原因", "All reasons"),
    "cc.person": ("人员（脱敏）", "Person (masked)"), "cc.town": ("镇（街道）", "Town"), "cc.evidence": ("依据（部门签名答复）", "Evidence (signed answers)"),
    "cc.lead": ("拒止预警线索", "Stop-warning lead"), "cc.no_hits": ("没有命中。", "No hits."),
    "cc.audited": ("本页人员信息已脱敏；查看已记录审计日志（{who}）。", "People are shown masked; this view was recorded ({who})."),
    "cc.filters": ("各部门令牌过滤器数据日期", "Departments' token filter data dates"),
    "cc.leads_note": ("每条命中已生成拒止预警线索并转办至人员所在镇（街道）复核，不会自动停发待遇。",
                      "Each hit became a stop-warning lead referred to the person's town for review; nothing is stopped automatically."),
    "cc.run_title": ("运行比对", "Run a cross-check"), "cc.check_file": ("比对方案", "Check file"),
    "cc.count_only_label": ("仅统计命中人数（不保留人员，不生成线索）", "Counts only (keep nobody, no leads)"),
    "cc.run": ("开始比对", "Run the check"), "cc.run_help": ("以您的工号下达并记录；大型比对请使用命令行 hedui crosscheck run。",
                                                       "Ordered and recorded under your staff code; run large checks with `hedui crosscheck run`."),
    "cc.no_files": ("未配置比对方案目录（hedui console --checks-dir）。", "No check folder configured (hedui console --checks-dir)."),
    "cc.back": ("返回比对列表", "Back to the cross-checks"), "cc.value": ("数值", "value"), "cc.data_date": ("数据日期", "data date"),
    "nav.signout": ("退出登录", "Sign out"), "nav.lang": ("English", "中文"), "nav.skip": ("跳到正文", "Skip to content"),
    "signin.title": ("登录", "Sign in"), "signin.name": ("工号", "Staff code"), "signin.password": ("密码", "Password"),
    "signin.submit": ("登录", "Sign in"), "signin.expired": ("会话已超时，请重新登录。", "Your session expired; please sign in again."),
    "signin.signed_out": ("已退出登录。", "Signed out."),
    "signin.BAD_CREDENTIALS": ("工号或密码不正确。", "Wrong staff code or password."),
    "signin.LOCKED": ("该账号因多次登录失败已被锁定，请于 {until} 后再试，或请科长解锁。",
                      "This account is locked after repeated failures; try again after {until} or ask a supervisor."),
    "signin.LOCKED_OUT": ("连续登录失败次数过多，账号已锁定至 {until}。", "Too many failures: the account is locked until {until}."),
    "signin.DISABLED": ("该账号已停用，请联系科长。", "This account is disabled; ask a supervisor."),
    "signin.RATE_LIMITED": ("登录尝试过于频繁，请一分钟后再试。", "Too many sign-in attempts; wait a minute."),
    "signin.form_expired": ("登录表单已过期，请重新输入。", "The sign-in form expired; please try again."),
    "err.title": ("出错了", "Something went wrong"), "err.back": ("返回", "Back"),
    "err.denied": ("您的角色（{role}）无权执行此操作。此次访问已记录。", "Your role ({role}) may not do this. The attempt was recorded."),
    "err.csrf": ("安全校验失败（表单令牌无效或已过期），操作未执行。请刷新页面后重试。",
                 "Security check failed (invalid or expired form token); nothing was done. Reload the page and try again."),
    "err.too_large": ("上传的文件过大（上限 {limit}），未保存任何内容。", "The upload is too large (limit {limit}); nothing was saved."),
    "err.id_in_url": ("网址中不得含有身份证号。请通过表单提交。", "Identity numbers must never be in a web address; use the forms."),
    "err.not_found": ("未找到：{what}", "Not found: {what}"), "err.invalid": ("输入有误：{what}", "Invalid input: {what}"),
    "err.precondition": ("当前状态下不能执行：{what}", "Not possible now: {what}"),
    "err.duplicate": ("该表单已提交过，未重复执行。", "This form was already submitted; nothing was done twice."),
    "err.pending": ("该表单正在处理，请勿重复提交。", "This form is being processed; please do not submit it again."),
    "err.internal": ("系统内部错误，操作未完成。请联系管理员。", "Internal error; nothing was completed. Contact the administrator."),
    "cases.title": ("核对案件", "Cases"), "cases.none": ("没有符合条件的案件。", "No cases match."),
    "cases.filter": ("筛选", "Filter"), "cases.all": ("全部", "All"), "cases.ref": ("案件编号", "Case"),
    "cases.purpose": ("核对事项", "Purpose"), "cases.region": ("行政区划", "Region"), "cases.operator": ("经办人", "Operator"),
    "cases.status": ("状态", "Status"), "cases.members": ("成员数", "Members"), "cases.created": ("立案时间", "Opened"),
    "cases.run_at": ("核对时间", "Run at"), "cases.review": ("复核", "Review"), "cases.mine": ("只看我的", "Mine only"),
    "new.title": ("新建核对案件", "New verification case"), "new.form": ("逐项填写", "Type in"),
    "new.upload": ("从文件导入成员", "Import members from a file"),
    "new.purpose": ("核对事项", "Purpose"), "new.region": ("户籍所在行政区划代码", "Region code of the household"),
    "new.region_help": ("6、9 或 12 位数字，例如 370304。", "6, 9 or 12 digits, e.g. 370304."),
    "new.reference_month": ("参考月份（可选）", "Reference month (optional)"),
    "case.reference_month": ("核对基准月", "Reference month"),
    "new.reference_month_help": ("格式 YYYY-MM；不填则为申请当月的上一个月。", "YYYY-MM; default: the month before the application."),
    "new.expenditure": ("一次性必需支出（元，临时救助）", "One-off necessary expenditure (CNY, temporary assistance)"),
    "new.members": ("家庭成员", "Household members"), "new.identity": ("身份证号", "Identity number"),
    "new.relation": ("与申请人关系", "Relation to the applicant"), "new.member_n": ("第 {n} 位成员", "Member {n}"),
    "new.add_member": ("添加成员", "Add a member"), "new.consent": ("授权书扫描件（PDF）", "Signed authorisation (授权书) scan (PDF)"),
    "new.consent_help": ("仅计算并记录其 SHA-256 摘要{kept}。上限 {limit}。", "Only its SHA-256 digest is recorded{kept}. Limit {limit}."),
    "new.consent_kept": ("，原件另存于本机授权书目录", ", and the scan is kept in the consent folder"),
    "new.members_file": ("成员名单（CSV 或 Excel：身份证号, 关系）", "Members list (CSV or Excel: identity, relation)"),
    "new.members_file_help": ("第一列身份证号，第二列关系；表头可有可无。上限 {limit}。",
                              "First column identity number, second relation; header optional. Limit {limit}."),
    "new.submit": ("开立案件", "Open the case"), "new.errors": ("请更正以下问题：", "Please correct the following:"),
    "id.ok": ("校验通过", "valid"), "id.converted": ("15 位旧号码，已转换为 18 位：{id}", "15-digit legacy number, converted to 18: {id}"),
    "id.repaired": ("已规范为：{id}", "normalised to: {id}"), "id.empty": ("请输入身份证号", "enter an identity number"),
    "id.length": ("位数不对：应为 15 或 18 位（现为 {n} 位）", "wrong length: want 15 or 18 characters (got {n})"),
    "id.check": ("校验位不符，请核对号码", "check digit mismatch: please check the number"),
    "id.birth": ("出生日期无效", "impossible birth date"), "id.chars": ("含有非数字字符", "contains a non-digit"),
    "id.last": ("末位应为数字或 X", "last character must be a digit or X"),
    "id.dup": ("与第 {n} 位成员重复", "same person as member {n}"),
    "val.purpose": ("请选择核对事项", "choose a purpose"), "val.region": ("行政区划代码应为 6、9 或 12 位数字", "region: want 6, 9 or 12 digits"),
    "val.month": ("参考月份格式应为 YYYY-MM，且不晚于本月", "reference month: want YYYY-MM, not after this month"),
    "val.expenditure": ("支出金额应为 0 至 10 亿之间的数字", "expenditure: want an amount 0..1e9"),
    "val.members": ("至少需要一位家庭成员，至多 20 位", "between 1 and 20 members"),
    "val.consent_missing": ("请上传授权书扫描件（PDF）", "upload the signed authorisation (PDF)"),
    "val.consent_pdf": ("授权书必须是 PDF 文件（文件头应为 %PDF-），未保存任何内容", "the authorisation must be a PDF (starting %PDF-); nothing was saved"),
    "val.consent_large": ("授权书文件过大（上限 {limit}），未保存任何内容", "the authorisation is too large (limit {limit}); nothing was saved"),
    "val.file_type": ("成员名单须为 .csv 或 .xlsx 文件", "the members list must be a .csv or .xlsx file"),
    "val.file_encoding": ("CSV 文件须为 UTF-8 或 GBK 编码", "the CSV must be UTF-8 or GBK"),
    "val.file_bad": ("无法读取成员名单文件", "cannot read the members list"),
    "val.row": ("第 {row} 行：{msg}", "row {row}: {msg}"), "val.note": ("备注中不得含身份证号，且不超过 500 字", "note: no identity numbers, at most 500 characters"),
    "case.title": ("案件 {ref}", "Case {ref}"), "case.summary": ("案件信息", "Case"), "case.consent": ("授权书摘要", "Authorisation digest"),
    "case.members": ("家庭成员", "Members"), "case.show_ids": ("显示完整身份证号（将记录审计日志）", "Show full identity numbers (audited)"),
    "case.ids_shown": ("以下为完整身份证号，本次查看已记录。", "Full identity numbers below; this view was recorded."),
    "case.departments": ("各部门核对情况", "Departments"), "case.run": ("开始核对", "Run the check"),
    "case.rerun": ("补充核对未答复部门", "Ask the departments still missing"), "case.report": ("查看核对报告", "Open the report"),
    "case.reviews": ("复核记录", "Reviews"), "case.review_form": ("复核意见", "Review"), "case.decision": ("复核结论", "Decision"),
    "case.note": ("复核说明", "Note"), "case.review_submit": ("提交复核", "Submit the review"), "case.no_reviews": ("尚未复核。", "Not reviewed yet."),
    "case.reviewer": ("复核人", "Reviewer"), "case.reviewed_at": ("复核时间", "Reviewed at"),
    "run.title": ("核对进度", "Progress"), "run.department": ("部门", "Department"), "run.state": ("结果", "Result"),
    "run.reason": ("原因", "Reason"), "run.attempts": ("尝试次数", "Attempts"), "run.running": ("正在向各部门核对……", "Asking every department…"),
    "run.done_complete": ("核对完成：各部门均已答复。", "Done: every department answered."),
    "run.done_incomplete": ("核对结束，但部分部门未答复，报告不完整。可稍后补充核对。",
                            "Done, but some departments did not answer: the report is incomplete. Ask again later."),
    "run.failed": ("核对未能进行：{why}", "The check could not run: {why}"), "run.not_current_n": ("{n} 项数据未更新", "{n} field(s) not current"),
    "report.title": ("核对报告 {ref}", "Report {ref}"), "report.print": ("打印 / 另存为 PDF", "Print / save as PDF"),
    "report.print_view": ("打印版（A4）", "Print layout (A4)"), "report.frame": ("核对报告正文", "Report"),
    "leads.title": ("主动发现线索", "Discovery leads"), "leads.town": ("镇（街道）", "Town"), "leads.type": ("事件类型", "Event type"),
    "leads.status": ("线索状态", "Lead status"), "leads.id": ("线索号", "Lead"), "leads.events": ("合并的通知", "Merged notices"),
    "leads.referral": ("转办", "Referral"), "leads.none": ("没有符合条件的线索。", "No leads match."),
    "leads.reason": ("查看事由（必填，将记录审计日志）", "Reason for opening (required, audited)"),
    "leads.open_page": ("打开本页全部线索的密封详情", "Open the sealed details of every lead on this page"),
    "leads.open_one": ("打开密封详情", "Open sealed details"), "leads.opened": ("已打开 {n} 条线索的密封详情，本次查看已记录。", "Opened the sealed details of {n} lead(s); recorded."),
    "leads.person": ("当事人", "Person"), "leads.details": ("详情", "Details"), "leads.source": ("来源", "Source"),
    "leads.event_date": ("事件日期", "Event date"), "leads.received": ("收到时间", "Received"), "leads.prev": ("上一页", "Previous"),
    "leads.next": ("下一页", "Next"), "leads.page": ("第 {n} 页", "Page {n}"),
    "ref.title": ("线索转办单", "Referrals"), "ref.id": ("转办单号", "Referral"), "ref.assignee": ("承办单位", "Assignee"),
    "ref.created": ("转办时间", "Referred"), "ref.due": ("办结期限", "Due"), "ref.status": ("状态", "Status"),
    "ref.outcome": ("反馈结果", "Outcome"), "ref.programme": ("纳入救助项目", "Programme"), "ref.overdue": ("已逾期", "overdue"),
    "ref.basis.weekdays-only": ("无官方节假日数据，仅按周一至周五计算", "weekdays only: no official holiday data"),
    "ref.basis.override": ("按运维补充日历计算", "per the operator's calendar override"),
    "ref.overdue_only": ("只看逾期", "Overdue only"), "ref.respond": ("登记反馈", "Record the answer"),
    "ref.respond_title": ("登记转办单 {id} 的反馈", "Answer to referral {id}"), "ref.escalate": ("督办全部逾期转办单", "Escalate every overdue referral"),
    "ref.escalated_n": ("已督办 {n} 张逾期转办单。", "Escalated {n} overdue referral(s)."), "ref.none": ("没有符合条件的转办单。", "No referrals match."),
    "ref.workdays": ("（{n} 个工作日内办结）", "(within {n} working days)"), "ref.today": ("今天：{d}", "Today: {d}"),
    "ref.programme_help": ("结果为“已纳入救助”时必选。", "Required when the outcome is 'assisted'."),
    "ref.saved": ("已登记转办单 {id} 的反馈。", "Recorded the answer to referral {id}."),
    "mr.title": ("社会救助主动发现工作月报", "Active discovery monthly report"), "mr.month": ("月份", "Month"),
    "mr.show": ("查看", "Show"), "mr.frame": ("月报正文", "Monthly report"),
    "reason.SAME_OPERATOR": ("复核人不能是立案经办人本人", "the reviewer must not be the operator who opened the case"),
    "reason.NOT_RUN": ("案件尚未核对，不能复核", "the case has not been run yet"),
    "reason.INCOMPLETE": ("核对不完整的案件不能同意，只能退回", "an incomplete case cannot be approved, only returned"),
    "reason.ALREADY_RESPONDED": ("该转办单已登记过反馈", "this referral was already answered"),
    "reason.REASON_REQUIRED": ("请填写查看事由（2 至 200 字）", "give a reason (2 to 200 characters)"),
    "reason.IDENTITY_IN_TEXT": ("文字中不得含有身份证号", "the text must not contain an identity number"),
}

CODES: dict[str, dict[str, tuple[str, str]]] = {
    "purpose": {"dibao": ("最低生活保障", "Minimum living allowance (dibao)"), "tekun": ("特困人员供养", "Extreme-poverty support (tekun)"),
                "temporary_assistance": ("临时救助", "Temporary assistance"), "periodic_review": ("定期复核", "Periodic review")},
    "relation": {"applicant": ("申请人", "applicant"), "spouse": ("配偶", "spouse"), "child": ("子女", "child"),
                 "parent": ("父母", "parent"), "sibling": ("兄弟姐妹", "sibling"), "grandparent": ("祖父母/外祖父母", "grandparent"),
                 "grandchild": ("孙子女/外孙子女", "grandchild"), "member": ("其他共同生活成员", "other member")},
    "case_status": {"open": ("待核对", "not run"), "complete": ("核对完整", "complete"), "incomplete": ("核对不完整", "incomplete")},
    "answer": {"pending": ("等待答复", "waiting"), "ok": ("已答复", "answered"), "not_current": ("已答复（部分数据未更新）", "answered, some data not current"),
               "unavailable": ("无法连接", "unavailable"), "maintenance": ("维护中", "maintenance"), "refused": ("被拒绝", "refused"), "bad_signature": ("签名无效", "bad signature"),
               "bad_proof": ("证明无效", "bad proof"), "earlier": ("此前已答复", "answered earlier")},
    "decision": {"approved": ("同意", "approved"), "returned": ("退回重核", "returned")},
    "role": {"caseworker": ("经办", "caseworker"), "reviewer": ("复核", "reviewer"), "supervisor": ("科长/主任", "supervisor")},
    "lead_status": {"open": ("办理中", "open"), "closed": ("已办结", "closed")},
    "ref_status": {"open": ("待反馈", "open"), "responded": ("已反馈", "answered"), "escalated": ("已督办", "escalated")},
    "outcome": {"found": ("已核实", "found"), "assisted": ("已纳入救助", "assisted"), "not_eligible": ("不符合条件", "not eligible"),
                "unreachable": ("联系不上", "unreachable")},
    "programme": {"dibao": ("低保", "dibao"), "tekun": ("特困供养", "tekun"), "temporary_assistance": ("临时救助", "temporary assistance"),
                  "medical": ("医疗救助", "medical"), "education": ("教育救助", "education"), "housing": ("住房救助", "housing"),
                  "employment": ("就业救助", "employment"), "disaster_relief": ("受灾人员救助", "disaster relief")},
    "source": {"notice": ("部门推送", "department notice"), "manual": ("网格员上报", "grid worker")},
    # Cross-check criteria (docs/crosscheck.md); other names show as their code.
    "criterion": {"dead": ("户籍登记死亡", "registered dead"), "vehicle": ("名下高价车辆", "high-value vehicle"),
                  "property": ("多套住房", "several residences"), "high_income": ("高收入", "high income")},
    "event": {"large_medical_expense": ("大额医疗支出", "large medical expense"),
              "large_medical_expense_yearly": ("年度大额医疗支出", "large yearly medical expense"),
              "newly_certified_disabled": ("新办残疾人证", "newly certified disability"), "fire_loss": ("火灾损失", "fire loss"),
              "traffic_accident": ("交通事故", "traffic accident"), "disaster_hardship": ("受灾困难", "disaster hardship"),
              "education_aid_application": ("教育救助申请", "education aid application"), "hardship_complaint": ("困难诉求", "hardship complaint"),
              "new_assistance_recipient": ("新增救助对象", "new assistance recipient"), "online_help_request": ("网上求助", "online help request"),
              "return_to_poverty_risk": ("返贫风险", "risk of returning to poverty"), "illness": ("患病", "illness")},
    "detail": {"amount": ("金额", "amount"), "hospital": ("医院", "hospital"), "admitted_on": ("入院日期", "admitted on"),
               "note": ("备注", "note"), "reporter": ("上报人", "reporter"), "kind": ("类别", "kind"), "grade": ("等级", "grade"),
               "category": ("类别", "category"), "cert_no": ("证号", "certificate no."), "cause": ("原因", "cause"),
               "channel": ("渠道", "channel"), "large_loss": ("重大损失", "large loss"), "outcome": ("结果", "outcome"),
               "platform": ("平台", "platform"), "programme": ("救助项目", "programme"), "reason": ("原因", "reason"),
               "school": ("学校", "school"), "fact": ("数据项", "fact"), "total": ("合计", "total"), "events": ("次数", "events"), "unit": ("单位", "unit"), "value": ("数值", "value")},
}


class Translator:
    """``t("key", n=3)`` in templates; ``t.code("purpose", "dibao")`` for codes."""

    def __init__(self, lang: str, departments: dict[str, str] | None = None) -> None:
        self.lang = lang if lang in LANGS else "zh"
        self._i = 0 if self.lang == "zh" else 1
        self._departments = departments or {}

    def __call__(self, key: str, **kw) -> str:
        pair = MESSAGES.get(key)
        text = pair[self._i] if pair else key
        return text.format(**kw) if kw else text

    def code(self, kind: str, value: str | None) -> str:
        if value is None or value == "":
            return ""
        pair = CODES.get(kind, {}).get(value)
        if pair is None and kind == "event" and value.startswith("stop."):
            # A cross-check hit's lead (issue 14): 拒止预警 and the criterion.
            return ("拒止预警：", "stop warning: ")[self._i] + self.code("criterion", value[5:])
        return pair[self._i] if pair else value

    def department(self, code: str) -> str:
        """Chinese names come from the signed directory; English shows the member code."""
        name = self._departments.get(code)
        return f"{name}（{code}）" if name and self.lang == "zh" else (f"{code} ({name})" if name else code)

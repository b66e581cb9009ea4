"""token index generations (issue 13: serving is all-or-nothing per index build)

token_index becomes one row per (epoch, token, source, gen, part): the facts of one source
behind one token in one build; index_progress.live_gen names the build that is served, and
problem_rows counts what the current run could not use.
Existing rows are split by source and filed under the run that wrote them; a source whose
build had completed is live at that run (a build that was in progress when the store was
upgraded is served as it stands, as before the upgrade: finish it with ``hedui node index``).

Revision ID: 0009x
Revises: 0009ops15
Create Date: 2026-12-01
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0009x'
down_revision = '0009ops15'
branch_labels = None
depends_on = None

_PAGE = 2000


def _new_table(name: str) -> None:
    op.create_table(name,
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('token', sa.LargeBinary(length=64), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('gen', sa.Integer(), nullable=False),
    sa.Column('part', sa.BigInteger(), nullable=False),
    sa.Column('facts', sa.Text(), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('epoch', 'token', 'source', 'gen', 'part', name=op.f(f'pk_{name}'))
    )


def _pages(conn, sql: str):
    """(epoch, token, ...) rows of ``sql`` in keyset pages (bounded memory; (epoch, token) is
    the key of the table read)."""
    last = None
    while True:
        q = sql + (" WHERE epoch > :e OR (epoch = :e AND token > :t)" if last else "") + f" ORDER BY epoch, token LIMIT {_PAGE}"
        rows = conn.execute(sa.text(q), {"e": last[0], "t": last[1]} if last else {}).all()
        yield from rows
        if len(rows) < _PAGE:
            return
        last = rows[-1][0], rows[-1][1]


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table('index_progress', schema=None) as batch_op:
        batch_op.add_column(sa.Column('live_gen', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('problem_rows', sa.BigInteger(), server_default='0', nullable=False))
    conn.execute(sa.text("UPDATE index_progress SET live_gen = run WHERE completed_at IS NOT NULL"))
    runs = {(e, s): r for e, s, r in conn.execute(sa.text("SELECT epoch, source, run FROM index_progress"))}
    _new_table('token_index_v2')
    ins = sa.text("INSERT INTO token_index_v2 (epoch, token, source, gen, part, facts, row_count) "
                  "VALUES (:e, :t, :s, :g, 0, :f, :c)")
    batch: list[dict] = []
    for epoch, token, facts in _pages(conn, "SELECT epoch, token, facts FROM token_index"):
        for source, locs in json.loads(facts).items():
            if locs:
                batch.append({"e": epoch, "t": token, "s": source, "g": runs.get((epoch, source), 1),
                              "f": json.dumps(locs, sort_keys=True, separators=(",", ":"), ensure_ascii=True),
                              "c": len(locs)})
        if len(batch) >= _PAGE:
            conn.execute(ins, batch)
            batch = []
    if batch:
        conn.execute(ins, batch)
    op.drop_table('token_index')
    op.rename_table('token_index_v2', 'token_index')
    if conn.dialect.name == 'postgresql':
        op.execute("ALTER INDEX pk_token_index_v2 RENAME TO pk_token_index")
    with op.batch_alter_table('token_index', schema=None) as batch_op:
        batch_op.create_index('ix_token_index_gen', ['epoch', 'source', 'gen'], unique=False)


def downgrade() -> None:
    conn = op.get_bind()
    op.create_table('token_index_v1',
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('token', sa.LargeBinary(length=64), nullable=False),
    sa.Column('facts', sa.Text(), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('epoch', 'token', name=op.f('pk_token_index_v1'))
    )
    # Only live rows go back (the old table had no notion of a build in progress).
    live = {(e, s): g for e, s, g in conn.execute(sa.text("SELECT epoch, source, live_gen FROM index_progress"))}
    ins = sa.text("INSERT INTO token_index_v1 (epoch, token, facts, row_count, updated_at) "
                  "VALUES (:e, :t, :f, :c, CURRENT_TIMESTAMP)")
    cur: tuple | None = None
    doc: dict = {}

    def flush() -> None:
        n = sum(len(v) for v in doc.values())
        if cur is not None and n:
            conn.execute(ins, {"e": cur[0], "t": cur[1], "f": json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                                                          ensure_ascii=True), "c": n})

    rows = conn.execution_options(yield_per=_PAGE).execute(sa.text(
        "SELECT epoch, token, source, gen, facts FROM token_index ORDER BY epoch, token"))
    for epoch, token, source, gen, facts in rows:
        if (epoch, token) != cur:
            flush()
            cur, doc = (epoch, token), {}
        if live.get((epoch, source)) is not None and gen <= live[(epoch, source)]:
            doc.setdefault(source, {}).update(json.loads(facts))
    flush()
    op.drop_table('token_index')
    op.rename_table('token_index_v1', 'token_index')
    if conn.dialect.name == 'postgresql':
        op.execute("ALTER INDEX pk_token_index_v1 RENAME TO pk_token_index")
    with op.batch_alter_table('index_progress', schema=None) as batch_op:
        batch_op.drop_column('problem_rows')
        batch_op.drop_column('live_gen')

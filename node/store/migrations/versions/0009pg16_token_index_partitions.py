"""token_index partitioned by token prefix on PostgreSQL (issue 16 item 6)

PostgreSQL only: ``token_index`` becomes ``PARTITION BY RANGE (token)`` with
``[store] index_partitions`` partitions (default 16) split at equal steps of the token's
2-byte prefix (hedui.node.verification.index_tables); the rows are moved across in the same
transaction. SQLite keeps the plain table. The count is read when the table is created;
a store already partitioned is left as it is.

Revision ID: 0009pg16
Revises: 0008t
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

from hedui.node.verification.index_tables import DEFAULT_INDEX_PARTITIONS, token_index_pg_ddl


revision = '0009pg16'
down_revision = '0009ops15'
branch_labels = None
depends_on = None

_COLS = "epoch, token, facts, row_count, updated_at"


def _partitioned(bind) -> bool:
    kind = bind.execute(sa.text("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE c.relname = 'token_index' AND n.nspname = current_schema()")).scalar()
    return kind == "p"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or _partitioned(bind):
        return
    n = int(op.get_context().config.attributes.get("index_partitions") or DEFAULT_INDEX_PARTITIONS)
    op.execute("ALTER TABLE token_index RENAME CONSTRAINT pk_token_index TO pk_token_index_plain")
    op.execute("ALTER TABLE token_index RENAME TO token_index_plain")
    for stmt in token_index_pg_ddl(n):
        op.execute(stmt)
    op.execute(f"INSERT INTO token_index ({_COLS}) SELECT {_COLS} FROM token_index_plain")
    op.execute("DROP TABLE token_index_plain")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _partitioned(bind):
        return
    op.execute("ALTER TABLE token_index RENAME TO token_index_parts")
    op.execute("ALTER TABLE token_index_parts RENAME CONSTRAINT pk_token_index TO pk_token_index_parts")
    op.create_table(
        'token_index',
        sa.Column('epoch', sa.Integer(), nullable=False),
        sa.Column('token', sa.LargeBinary(length=64), nullable=False),
        sa.Column('facts', sa.Text(), nullable=False),
        sa.Column('row_count', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('epoch', 'token', name=op.f('pk_token_index')),
    )
    op.execute(f"INSERT INTO token_index ({_COLS}) SELECT {_COLS} FROM token_index_parts")
    op.execute("DROP TABLE token_index_parts")   # drops its partitions with it

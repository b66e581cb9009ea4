"""token_filters: the hub's cache of verified signed token filters; case_answers.filter_first (issue 14)

Revision ID: 0007c
Revises: 0006h
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0007c'
down_revision = '0006h'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'token_filters',
        sa.Column('provider', sa.String(length=64), nullable=False),
        sa.Column('epoch', sa.Integer(), nullable=False),
        sa.Column('data_date', sa.Date(), nullable=False),
        sa.Column('total', sa.BigInteger(), nullable=False),
        sa.Column('header_sha256', sa.LargeBinary(length=32), nullable=False),
        sa.Column('envelope', sa.LargeBinary(), nullable=False),
        sa.Column('bodies', sa.LargeBinary(), nullable=False),
        sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('provider', name=op.f('pk_token_filters')),
    )
    with op.batch_alter_table('case_answers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('filter_first', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('case_answers', schema=None) as batch_op:
        batch_op.drop_column('filter_first')
    op.drop_table('token_filters')

"""index_progress.data_date: the day each indexed source's data covers (issue 12)

Revision ID: 0005i
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0005i'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('index_progress', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_date', sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('index_progress', schema=None) as batch_op:
        batch_op.drop_column('data_date')

"""consent records (issue 18 part B): case_answers.request and consent_revocations

Revision ID: 0008t
Revises: 0007c
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0008t'
down_revision = '0007c'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('case_answers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request', sa.LargeBinary(), nullable=True))
    op.create_table(
        'consent_revocations',
        sa.Column('consent_digest', sa.LargeBinary(length=32), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('operator', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('consent_digest'),
    )


def downgrade() -> None:
    op.drop_table('consent_revocations')
    with op.batch_alter_table('case_answers', schema=None) as batch_op:
        batch_op.drop_column('request')

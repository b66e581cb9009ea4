"""cases: reference month; caseworker overrides of member counting (issue 12)

Revision ID: 0006h
Revises: 0005i
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0006h'
down_revision = '0005i'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reference_month', sa.String(length=7), nullable=True))
    op.create_table('case_member_overrides',
    sa.Column('override_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_ref', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('counted', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_ref'], ['cases.case_ref'], name=op.f('fk_case_member_overrides_case_ref_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('override_id', name=op.f('pk_case_member_overrides'))
    )
    with op.batch_alter_table('case_member_overrides', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_member_overrides_case_ref'), ['case_ref'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('case_member_overrides', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_member_overrides_case_ref'))
    op.drop_table('case_member_overrides')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('reference_month')

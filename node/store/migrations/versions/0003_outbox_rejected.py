"""notice outbox: a 'rejected' status for notices the hub refused as such

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('notice_outbox', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_notice_outbox_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_notice_outbox_status'), "status IN ('pending', 'delivered', 'rejected')")


def downgrade() -> None:
    op.execute("UPDATE notice_outbox SET status = 'pending' WHERE status = 'rejected'")
    with op.batch_alter_table('notice_outbox', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_notice_outbox_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_notice_outbox_status'), "status IN ('pending', 'delivered')")

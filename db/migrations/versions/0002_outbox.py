"""stock_watches.outbox_id: a watch ends when its back-in-stock message is sent, not when it is queued

Revision ID: 0002_outbox
Revises: 0001
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_outbox'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('stock_watches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outbox_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_stock_watches_outbox_id'), ['outbox_id'], unique=False)
        batch_op.create_foreign_key('fk_stock_watches_outbox_id', 'outbox', ['outbox_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('stock_watches', schema=None) as batch_op:
        batch_op.drop_constraint('fk_stock_watches_outbox_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_stock_watches_outbox_id'))
        batch_op.drop_column('outbox_id')

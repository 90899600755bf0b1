"""admin_actions: the audit log of what admins changed (restock, ship, delivered, cancel)

Revision ID: 0005_audit
Revises: 0002_outbox
Create Date: 2026-12-02

(Branched from 0002_outbox; the revisions other branches add are chained in when they are merged.)
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_audit'
down_revision = '0004_search'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('admin_actions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('admin_id', sa.BigInteger(), nullable=False),
    sa.Column('admin_name', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=True),
    sa.Column('product_id', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name='fk_admin_actions_order_id', ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name='fk_admin_actions_product_id',
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('admin_actions', schema=None) as batch_op:
        batch_op.create_index('ix_admin_actions_order_id_id', ['order_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('admin_actions', schema=None) as batch_op:
        batch_op.drop_index('ix_admin_actions_order_id_id')
    op.drop_table('admin_actions')

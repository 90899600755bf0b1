"""support: customers' messages relayed to the admin group (so an admin's reply finds its customer),
and the message that carries an unpaid order's pay buttons (edited when the order leaves
awaiting_payment)

Revision ID: 0010_support
Revises: 0009_promos
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_support'
down_revision = '0009_promos'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'support_messages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.BigInteger(), nullable=False),
        sa.Column('admin_chat_id', sa.BigInteger(), nullable=False),
        sa.Column('admin_message_id', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('admin_chat_id', 'admin_message_id', name='uq_support_messages_admin_message'),
    )
    op.create_index(op.f('ix_support_messages_customer_id'), 'support_messages', ['customer_id'], unique=False)
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pay_message_id', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('pay_message_id')
    op.drop_index(op.f('ix_support_messages_customer_id'), table_name='support_messages')
    op.drop_table('support_messages')

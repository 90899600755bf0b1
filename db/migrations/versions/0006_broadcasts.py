"""broadcasts: the admins' news to customers, their outbox rows (priority, photo, edit), news opt-out

Revision ID: 0006_broadcasts
Revises: 0005_audit
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_broadcasts'
down_revision = '0005_audit'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'broadcasts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.BigInteger(), nullable=False),
        sa.Column('chat_id', sa.BigInteger(), nullable=False),
        sa.Column('html', sa.Text(), nullable=False),
        sa.Column('photo', sa.String(length=256), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('sent', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('blocked', sa.Integer(), nullable=False),
        sa.Column('reported', sa.Integer(), nullable=False),
        sa.Column('progress_message_id', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_broadcasts_state', 'broadcasts', ['state'], unique=False)
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('news_opt_out', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('photo', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('edit_message_id', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('broadcast_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_outbox_broadcast_id'), ['broadcast_id'], unique=False)
        batch_op.create_index('ix_outbox_state_priority', ['state', 'priority', 'id'], unique=False)
        batch_op.create_foreign_key('fk_outbox_broadcast_id', 'broadcasts', ['broadcast_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('fk_outbox_broadcast_id', type_='foreignkey')
        batch_op.drop_index('ix_outbox_state_priority')
        batch_op.drop_index(batch_op.f('ix_outbox_broadcast_id'))
        batch_op.drop_column('broadcast_id')
        batch_op.drop_column('edit_message_id')
        batch_op.drop_column('photo')
        batch_op.drop_column('priority')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('news_opt_out')
    op.drop_index('ix_broadcasts_state', table_name='broadcasts')
    op.drop_table('broadcasts')

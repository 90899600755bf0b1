"""customers.language_chosen: the customer picked their language (/language), so it wins over their Telegram client's

Revision ID: 0003_language_chosen
Revises: 0002_outbox
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_language_chosen'
down_revision = '0002_outbox'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language_chosen', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('language_chosen')

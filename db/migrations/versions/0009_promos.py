"""promos: promo codes (percent or fixed per currency, minimum, last day, use limit) and the
code and discount on orders

Revision ID: 0009_promos
Revises: 0008_reviews
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0009_promos'
down_revision = '0008_reviews'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'promo_codes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=20), nullable=False),
        sa.Column('percent', sa.Integer(), nullable=True),
        sa.Column('amount', sa.BigInteger(), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('min_amount', sa.BigInteger(), nullable=True),
        sa.Column('min_currency', sa.String(length=3), nullable=True),
        sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('uses_limit', sa.Integer(), nullable=True),
        sa.Column('used', sa.Integer(), server_default='0', nullable=False),
        sa.Column('active', sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column('created_by', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('used >= 0', name='ck_promo_codes_used_nonnegative'),
        sa.CheckConstraint('uses_limit IS NULL OR used <= uses_limit', name='ck_promo_codes_used_within_limit'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('code', name='uq_promo_codes_code'),
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('promo_code', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('discount', sa.BigInteger(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('discount')
        batch_op.drop_column('promo_code')
    op.drop_table('promo_codes')

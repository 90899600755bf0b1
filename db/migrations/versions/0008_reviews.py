"""reviews: buyers' stars and comments per product, and the products' visible-rating aggregate

Revision ID: 0008_reviews
Revises: 0007_returns
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_reviews'
down_revision = '0007_returns'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rating_sum', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('rating_count', sa.Integer(), server_default='0', nullable=False))
    op.create_table(
        'reviews',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('product_id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.BigInteger(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('stars', sa.Integer(), nullable=False),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.Column('hidden', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('stars BETWEEN 1 AND 5', name='ck_reviews_stars_range'),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id']),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id']),
        sa.ForeignKeyConstraint(['product_id'], ['products.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('product_id', 'customer_id', name='uq_reviews_product_customer'),
    )
    op.create_index(
        'ix_reviews_product_hidden_updated', 'reviews', ['product_id', 'hidden', 'updated_at'], unique=False
    )


def downgrade() -> None:
    op.drop_index('ix_reviews_product_hidden_updated', table_name='reviews')
    op.drop_table('reviews')
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.drop_column('rating_count')
        batch_op.drop_column('rating_sum')

"""The sales read model: a projection of orders fed by events

Revision ID: 0015_sales_read_model
Revises: 0014_partner_webhooks
Create Date: 2026-12-02 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0015_sales_read_model'
down_revision = '0014_partner_webhooks'
branch_labels = None
depends_on = None


def upgrade():
    # One row per order: its latest order.* snapshot (shop.reports); no foreign key, it is rebuilt from the stream.
    op.create_table('sales_order',
    sa.Column('order_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('number', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('sold', sa.Boolean(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('discount', sa.BigInteger(), nullable=False),
    sa.Column('refunded', sa.BigInteger(), nullable=False),
    sa.Column('event_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_sales_order')),
    )
    op.create_index('ix_sales_order_day', 'sales_order', ['day', 'currency'])
    # The orders from before the event backbone have no events to rebuild them from: their rows come from the order
    # tables, as the report computed them (sold statuses; refunded = their payments' refunded amounts). Any event
    # about them from now on is newer (event_at = the order's creation) and takes over.
    op.execute("""
        INSERT INTO sales_order (order_id, number, created_at, day, currency, status, sold, total, discount, refunded,
                                 event_at, rank, event_id)
        SELECT o.id, o.number, o.created_at, (o.created_at AT TIME ZONE 'UTC')::date, o.currency, o.status,
               o.status IN ('confirmed', 'processing', 'shipped', 'delivered', 'returned', 'refunded'),
               o.total, coalesce(o.discount, 0),
               coalesce((SELECT sum(p.refunded_amount) FROM payment p WHERE p.order_id = o.id), 0),
               o.created_at,
               CASE o.status WHEN 'pending' THEN 0 WHEN 'confirmed' THEN 1 WHEN 'processing' THEN 2
                             WHEN 'shipped' THEN 3 WHEN 'delivered' THEN 4 WHEN 'returned' THEN 5
                             WHEN 'refunded' THEN 6 WHEN 'cancelled' THEN 7 ELSE 0 END,
               'migration-0015'
        FROM "order" o
    """)


def downgrade():
    op.drop_index('ix_sales_order_day', table_name='sales_order')
    op.drop_table('sales_order')

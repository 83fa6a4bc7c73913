"""order.tracking_carrier, tracking_number, tracking_url: the parcel of a shipped order, as staff entered it

Revision ID: 0011_order_tracking
Revises: 0010_product_image_option_value
Create Date: 2026-12-02 05:30:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0011_order_tracking'
down_revision = '0010_product_image_option_value'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('order', schema=None) as batch_op:
        # NULL until staff mark the order shipped with tracking; tracking_url is the link given, or the one made
        # from the number for a well-known carrier (UPS, USPS, FedEx, DHL), else NULL (the number alone is shown).
        batch_op.add_column(sa.Column('tracking_carrier', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('tracking_number', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('tracking_url', sa.String(length=500), nullable=True))


def downgrade():
    with op.batch_alter_table('order', schema=None) as batch_op:
        batch_op.drop_column('tracking_url')
        batch_op.drop_column('tracking_number')
        batch_op.drop_column('tracking_carrier')

"""order_line.list_price: the pre-sale unit price of a line bought at an automatic sale price

Revision ID: 0009_order_line_list_price
Revises: 0008_job_outbox
Create Date: 2026-12-02 04:55:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0009_order_line_list_price'
down_revision = '0008_job_outbox'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('order_line', schema=None) as batch_op:
        # unit_price is what was charged per unit (the sale price when a sale rule applied); list_price is the
        # price before the sale, kept only when it differs (NULL: the line was bought at its list price).
        batch_op.add_column(sa.Column('list_price', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.drop_column('list_price')

"""product_image.option_value: the option value (e.g. a colour) a product picture shows

Revision ID: 0010_product_image_option_value
Revises: 0009_order_line_list_price
Create Date: 2026-12-02 05:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0010_product_image_option_value'
down_revision = '0009_order_line_list_price'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('product_image', schema=None) as batch_op:
        # NULL: the picture shows the product whatever is chosen; "Red": the gallery shows it when Red is picked.
        batch_op.add_column(sa.Column('option_value', sa.String(length=60), nullable=True))


def downgrade():
    with op.batch_alter_table('product_image', schema=None) as batch_op:
        batch_op.drop_column('option_value')

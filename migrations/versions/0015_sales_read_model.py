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
    pass


def downgrade():
    pass

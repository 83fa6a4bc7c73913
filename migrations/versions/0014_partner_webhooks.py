"""Partner webhooks: endpoints, deliveries and their attempts

Revision ID: 0014_partner_webhooks
Revises: 0013_event_backbone
Create Date: 2026-12-02 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0014_partner_webhooks'
down_revision = '0013_event_backbone'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass

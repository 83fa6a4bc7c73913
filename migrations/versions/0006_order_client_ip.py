"""order.client_ip: who placed an order, so unpaid stock holds can be counted per client

Revision ID: 0006_order_client_ip
Revises: 0005_promotions
Create Date: 2026-12-01 11:40:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0006_order_client_ip'
down_revision = '0005_promotions'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('order', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_ip', sa.String(length=45), nullable=True))
        # Checkout counts a client's unpaid holds by IP and by e-mail: small partial indexes over pending orders.
        batch_op.create_index('ix_order_pending_client_ip', ['client_ip'], unique=False,
                              postgresql_where=sa.text("status = 'pending'"))
        batch_op.create_index('ix_order_pending_email', ['email'], unique=False,
                              postgresql_where=sa.text("status = 'pending'"))


def downgrade():
    with op.batch_alter_table('order', schema=None) as batch_op:
        batch_op.drop_index('ix_order_pending_email', postgresql_where=sa.text("status = 'pending'"))
        batch_op.drop_index('ix_order_pending_client_ip', postgresql_where=sa.text("status = 'pending'"))
        batch_op.drop_column('client_ip')

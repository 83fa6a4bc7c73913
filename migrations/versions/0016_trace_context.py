"""Trace context stored with work that continues in another process (observability)

Revision ID: 0016_trace_context
Revises: 0015_sales_read_model
Create Date: 2026-12-03 17:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0016_trace_context'
down_revision = '0015_sales_read_model'
branch_labels = None
depends_on = None


def upgrade():
    # A W3C traceparent ("00-<trace id>-<span id>-<flags>", 55 characters) or NULL when traces are off: the job or
    # event continues the trace of the transaction that recorded it, the payment's webhook that of its checkout.
    # DEFAULT NULL: the ORM leaves the column out of an INSERT that has no trace for it.
    op.add_column('outbox_job', sa.Column('trace_parent', sa.String(length=55), server_default=sa.text('NULL'), nullable=True))
    op.add_column('payment', sa.Column('trace_parent', sa.String(length=55), server_default=sa.text('NULL'), nullable=True))


def downgrade():
    op.drop_column('payment', 'trace_parent')
    op.drop_column('outbox_job', 'trace_parent')

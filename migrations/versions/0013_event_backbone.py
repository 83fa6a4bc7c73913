"""Event backbone: outbox_job.key (the aggregate an "event" row belongs to; per-aggregate order) and
consumed_event (which consumer group applied which event id: consumers are idempotent by event id)

Revision ID: 0013_event_backbone
Revises: 0012_stripe_checkout
Create Date: 2026-12-02 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0013_event_backbone'
down_revision = '0012_stripe_checkout'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('outbox_job', sa.Column('key', sa.String(length=120), nullable=True))
    # The event relay's scan: undispatched event rows in id order.
    op.create_index('ix_outbox_job_events_pending', 'outbox_job', ['id'],
                    postgresql_where=sa.text("dispatched_at IS NULL AND kind = 'event'"))
    op.create_table('consumed_event',
    sa.Column('group', sa.String(length=40), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('consumed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('group', 'event_id'),
    )
    op.create_index('ix_consumed_event_consumed_at', 'consumed_event', ['consumed_at'])


def downgrade():
    op.drop_index('ix_consumed_event_consumed_at', table_name='consumed_event')
    op.drop_table('consumed_event')
    op.drop_index('ix_outbox_job_events_pending', table_name='outbox_job')
    op.drop_column('outbox_job', 'key')

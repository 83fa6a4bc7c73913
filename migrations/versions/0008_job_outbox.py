"""outbox_job: jobs recorded in the transaction that needs them, dispatched to RQ by the relay

Revision ID: 0008_job_outbox
Revises: 0007_user_session_version
Create Date: 2026-12-02 01:20:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0008_job_outbox'
down_revision = '0007_user_session_version'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('outbox_job',
    sa.Column('id', sa.BigInteger(), nullable=False),
    # "job" rows are RQ jobs; the event backbone adds other kinds to the same table and relay.
    sa.Column('kind', sa.String(length=16), server_default='job', nullable=False),
    sa.Column('queue', sa.String(length=60), nullable=False),
    sa.Column('function', sa.String(length=200), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('kwargs', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
              nullable=False),
    sa.Column('retry', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('job_timeout', sa.Integer(), server_default='120', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('available_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    # Set when the job succeeded (RQ success callback) or RQ's failed list owns it; a dispatched row not
    # done whose job vanished from Redis is dispatched again by the relay (outbox.recover_lost).
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_job'))
    )
    # What the relay scans (undispatched rows in id order), and what the daily purge deletes.
    op.create_index('ix_outbox_job_pending', 'outbox_job', ['id'], unique=False,
                    postgresql_where=sa.text('dispatched_at IS NULL'))
    op.create_index('ix_outbox_job_dispatched_at', 'outbox_job', ['dispatched_at'], unique=False,
                    postgresql_where=sa.text('dispatched_at IS NOT NULL'))
    op.create_index('ix_outbox_job_unfinished', 'outbox_job', ['dispatched_at'], unique=False,
                    postgresql_where=sa.text('dispatched_at IS NOT NULL AND done_at IS NULL'))


def downgrade():
    op.drop_index('ix_outbox_job_unfinished', table_name='outbox_job')
    op.drop_index('ix_outbox_job_dispatched_at', table_name='outbox_job')
    op.drop_index('ix_outbox_job_pending', table_name='outbox_job')
    op.drop_table('outbox_job')

"""Stripe Checkout in the storefront: payment.flow, checkout_session_id, checkout_expires_at, charged_back and the
'processing' status; refund lines (refunds by line); disputes

Revision ID: 0012_stripe_checkout
Revises: 0011_order_tracking
Create Date: 2026-12-02 12:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0012_stripe_checkout'
down_revision = '0011_order_tracking'
branch_labels = None
depends_on = None

OLD_STATUSES = "status IN ('creating', 'requires_payment', 'succeeded', 'failed', 'cancelled')"
NEW_STATUSES = "status IN ('creating', 'requires_payment', 'processing', 'succeeded', 'failed', 'cancelled')"


def upgrade():
    with op.batch_alter_table('payment', schema=None) as batch_op:
        # Existing payments are PaymentIntents (API clients, the test gateway): flow 'intent'.
        batch_op.add_column(sa.Column('flow', sa.String(length=10), server_default='intent', nullable=False))
        batch_op.add_column(sa.Column('checkout_session_id', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('checkout_expires_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('charged_back', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_unique_constraint('uq_payment_checkout_session_id', ['checkout_session_id'])
        batch_op.create_check_constraint(op.f('ck_payment_flow'), "flow IN ('intent', 'checkout')")
        batch_op.drop_constraint(op.f('ck_payment_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_payment_status'), NEW_STATUSES)

    op.create_table('refund_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('refund_id', sa.Integer(), nullable=False),
    sa.Column('order_line_id', sa.Integer(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_refund_line_quantity')),
    sa.ForeignKeyConstraint(['order_line_id'], ['order_line.id'], name=op.f('fk_refund_line_order_line_id_order_line'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['refund_id'], ['refund.id'], name=op.f('fk_refund_line_refund_id_refund'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refund_line'))
    )
    with op.batch_alter_table('refund_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refund_line_order_line_id'), ['order_line_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_refund_line_refund_id'), ['refund_id'], unique=False)

    op.create_table('dispute',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('provider_dispute_id', sa.String(length=255), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=40), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.Column('evidence_due_by', sa.DateTime(), nullable=True),
    sa.Column('opened_at', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['order.id'], name=op.f('fk_dispute_order_id_order'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['payment_id'], ['payment.id'], name=op.f('fk_dispute_payment_id_payment'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispute')),
    sa.UniqueConstraint('provider_dispute_id', name='uq_dispute_provider_dispute_id')
    )
    with op.batch_alter_table('dispute', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dispute_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dispute_payment_id'), ['payment_id'], unique=False)


def downgrade():
    op.drop_table('dispute')
    op.drop_table('refund_line')
    op.execute("UPDATE payment SET status = 'requires_payment' WHERE status = 'processing'")
    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_payment_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_payment_status'), OLD_STATUSES)
        batch_op.drop_constraint(op.f('ck_payment_flow'), type_='check')
        batch_op.drop_constraint('uq_payment_checkout_session_id', type_='unique')
        batch_op.drop_column('charged_back')
        batch_op.drop_column('checkout_expires_at')
        batch_op.drop_column('checkout_session_id')
        batch_op.drop_column('flow')

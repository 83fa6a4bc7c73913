"""user_account.session_version: log-out and deactivation end every copy of a browser session

Revision ID: 0007_user_session_version
Revises: 0006_order_client_ip
Create Date: 2026-12-01 11:55:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0007_user_session_version'
down_revision = '0006_order_client_ip'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        # Existing rows start at 1; sessions minted before this revision name no version and end once.
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='1', nullable=False))


def downgrade():
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_column('session_version')

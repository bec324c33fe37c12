"""index for claims by provider

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 22:31:12.907723
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_messages_provider_queue', ['provider_id', 'state', 'seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_messages_provider_queue')


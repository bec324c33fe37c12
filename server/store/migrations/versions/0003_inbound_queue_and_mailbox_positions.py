"""inbound queue and mailbox positions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:06:43.425308
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_messages',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('provider_id', sa.String(length=36), nullable=False),
    sa.Column('campaign', sa.String(length=200), nullable=False),
    sa.Column('folder', sa.String(length=200), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('message_id', sa.String(length=998), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('conversation_id', sa.String(length=36), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('automatic', sa.Boolean(), nullable=False),
    sa.Column('oversized', sa.Boolean(), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('delivery_count', sa.Integer(), nullable=False),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('lease_consumer', sa.String(length=200), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('receive_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ack_time', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_inbound_messages')),
    sa.UniqueConstraint('id', name=op.f('uq_inbound_messages_id')),
    sa.UniqueConstraint('provider_id', 'folder', 'uidvalidity', 'uid', name='uq_inbound_messages_uid')
    )
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_messages_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index('ix_inbound_messages_dedup', ['provider_id', 'message_id', 'content_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_messages_provider_id'), ['provider_id'], unique=False)
        batch_op.create_index('ix_inbound_messages_queue', ['campaign', 'state', 'seq'], unique=False)

    op.create_table('mailbox_positions',
    sa.Column('provider_id', sa.String(length=36), nullable=False),
    sa.Column('folder', sa.String(length=200), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('last_uid', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('provider_id', 'folder', name=op.f('pk_mailbox_positions'))
    )


def downgrade() -> None:
    op.drop_table('mailbox_positions')
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_messages_queue')
        batch_op.drop_index(batch_op.f('ix_inbound_messages_provider_id'))
        batch_op.drop_index('ix_inbound_messages_dedup')
        batch_op.drop_index(batch_op.f('ix_inbound_messages_conversation_id'))

    op.drop_table('inbound_messages')

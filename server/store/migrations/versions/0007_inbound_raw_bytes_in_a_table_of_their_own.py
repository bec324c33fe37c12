"""inbound raw bytes in a table of their own

The queue entry is written again at every claim, ack and release; SQLite rewrites a
whole row on UPDATE, so with the mail in it every state change rewrote the message.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 23:40:24.863423
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_raw',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_raw'))
    )
    op.execute("INSERT INTO inbound_raw (id, raw) SELECT id, raw FROM inbound_messages")
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_column('raw')


def downgrade() -> None:
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('raw', sa.LargeBinary(), nullable=True))
    op.execute("UPDATE inbound_messages SET raw = "
               "(SELECT inbound_raw.raw FROM inbound_raw WHERE inbound_raw.id = inbound_messages.id)")
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.alter_column('raw', existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table('inbound_raw')

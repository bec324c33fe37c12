"""provider events

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'provider_events',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('provider_id', sa.String(length=36), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('previous_state', sa.String(length=8), nullable=False),
        sa.Column('state', sa.String(length=8), nullable=False),
        sa.Column('cause', sa.String(length=32), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('check_id', sa.String(length=64), nullable=False),
        sa.Column('error_code', sa.String(length=32), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['provider_id'], ['providers.id'],
                                name=op.f('fk_provider_events_provider_id_providers'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('seq', name=op.f('pk_provider_events')),
    )
    op.create_index('ix_provider_events_list', 'provider_events', ['provider_id', 'seq'])
    op.create_index('ix_provider_events_type', 'provider_events', ['provider_id', 'type', 'seq'])
    op.create_index(op.f('ix_provider_events_time'), 'provider_events', ['time'])


def downgrade() -> None:
    op.drop_table('provider_events')

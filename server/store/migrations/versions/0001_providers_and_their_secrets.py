"""providers and their secrets

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 17:59:04.071247
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('providers',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('name_key', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('account', sa.String(length=320), nullable=False),
    sa.Column('from_name', sa.String(length=200), nullable=False),
    sa.Column('receive_emails', sa.Boolean(), nullable=False),
    sa.Column('active_reference', sa.Boolean(), nullable=False),
    sa.Column('reply_to', sa.JSON(), nullable=False),
    sa.Column('campaign', sa.String(length=200), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('state_reason', sa.Text(), nullable=False),
    sa.Column('state_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_providers')),
    sa.UniqueConstraint('name_key', name=op.f('uq_providers_name_key'))
    )
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_providers_campaign'), ['campaign'], unique=False)
        batch_op.create_index(batch_op.f('ix_providers_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_providers_type'), ['type'], unique=False)

    op.create_table('provider_secrets',
    sa.Column('provider_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_provider_secrets_provider_id_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('provider_id', 'name', name=op.f('pk_provider_secrets'))
    )


def downgrade() -> None:
    op.drop_table('provider_secrets')
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_providers_type'))
        batch_op.drop_index(batch_op.f('ix_providers_state'))
        batch_op.drop_index(batch_op.f('ix_providers_campaign'))

    op.drop_table('providers')

"""pending OAuth authorizations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 20:44:22.610248
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('authorizations',
    sa.Column('state_hash', sa.String(length=64), nullable=False),
    sa.Column('provider_id', sa.String(length=36), nullable=False),
    sa.Column('flow', sa.LargeBinary(), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expire_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('use_time', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_authorizations_provider_id_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('state_hash', name=op.f('pk_authorizations'))
    )
    with op.batch_alter_table('authorizations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_authorizations_provider_id'), ['provider_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('authorizations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_authorizations_provider_id'))

    op.drop_table('authorizations')

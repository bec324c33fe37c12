"""POP3 UIDLs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 21:03:32.731863
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pop3_uidls',
    sa.Column('provider_id', sa.String(length=36), nullable=False),
    sa.Column('uidl', sa.String(length=70), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_pop3_uidls_provider_id_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('provider_id', 'uidl', name=op.f('pk_pop3_uidls'))
    )


def downgrade() -> None:
    op.drop_table('pop3_uidls')

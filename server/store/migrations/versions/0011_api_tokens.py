"""api tokens

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 20:30:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('display_name', sa.String(length=200), nullable=False),
        sa.Column('permissions', sa.JSON(), nullable=False),
        sa.Column('campaigns', sa.JSON(), nullable=False),
        sa.Column('providers', sa.JSON(), nullable=False),
        sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expire_time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_use_time', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    )


def downgrade() -> None:
    op.drop_table('api_tokens')

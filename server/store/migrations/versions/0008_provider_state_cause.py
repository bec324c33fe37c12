"""provider state cause

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 04:10:00.000000

Why a provider is in its state, as data beside the words (state_reason). Existing
providers get the cause their reason was written for.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# (state, reason LIKE pattern, cause), first match wins; the reasons mailgate wrote
_KNOWN = [
    ("GREEN", "mailbox reachable again", "RECOVERED"),
    ("GREEN", "%", "CHECKS_PASSED"),
    ("GREY", "%", "AUTHORIZATION_PENDING"),
    ("RED", "re-authorization required: %", "AUTHORIZATION_LOST"),
    ("RED", "receiving stopped: %", "MAILBOX_UNREACHABLE"),
    ("RED", "sending failed: %", "LOGIN_REFUSED"),
    ("RED", "sign-in %", "AUTHORIZATION_FAILED"),
    ("RED", "signed in as %, the provider's account is %", "AUTHORIZATION_FAILED"),
    ("RED", "%", "CHECKS_FAILED"),
]


def upgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state_cause', sa.String(length=32), nullable=True))
    providers = sa.table('providers', sa.column('state', sa.String), sa.column('state_reason', sa.Text),
                         sa.column('state_cause', sa.String))
    for state, pattern, cause in _KNOWN:
        op.execute(providers.update().where(providers.c.state_cause.is_(None), providers.c.state == state,
                                            providers.c.state_reason.like(pattern)).values(state_cause=cause))
    op.execute(providers.update().where(providers.c.state_cause.is_(None)).values(state_cause='UNSPECIFIED'))
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.alter_column('state_cause', existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.drop_column('state_cause')

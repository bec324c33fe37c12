"""mailbox ids: POP3's UIDL numbers for every source that knows its messages by opaque ids

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 05:00:00.000000

pop3_uidls numbered a provider's UIDLs; mailbox_ids numbers any source's ids per
mailbox (folder), so a source with several mailboxes, or a plugin's source, has
them too. POP3 reads one mailbox, INBOX.
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'mailbox_ids',
        sa.Column('provider_id', sa.String(length=36), nullable=False),
        sa.Column('folder', sa.String(length=200), nullable=False),
        sa.Column('source_id', sa.String(length=255), nullable=False),
        sa.Column('number', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_mailbox_ids_provider_id_providers'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('provider_id', 'folder', 'source_id', name=op.f('pk_mailbox_ids')))
    op.execute("INSERT INTO mailbox_ids (provider_id, folder, source_id, number) "
               "SELECT provider_id, 'INBOX', uidl, uid FROM pop3_uidls")
    op.drop_table('pop3_uidls')


def downgrade() -> None:
    op.create_table(
        'pop3_uidls',
        sa.Column('provider_id', sa.String(length=36), nullable=False),
        sa.Column('uidl', sa.String(length=70), nullable=False),
        sa.Column('uid', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_pop3_uidls_provider_id_providers'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('provider_id', 'uidl', name=op.f('pk_pop3_uidls')))
    # POP3's ids only: those of the inbox, short enough to be UIDLs.
    op.execute("INSERT INTO pop3_uidls (provider_id, uidl, uid) SELECT provider_id, source_id, number "
               "FROM mailbox_ids WHERE folder = 'INBOX' AND length(source_id) <= 70")
    op.drop_table('mailbox_ids')

"""message_bodies: a message's bytes apart from its delivery state

Claiming and settling a message update its state, lease and attempts. SQLite rewrites a whole
row on any update, and a digest's row held its ~15 KB body: every message was written three
times (queued, sending, sent). The body now sits in its own row, written once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 23:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'message_bodies',
        sa.Column('message_id', sa.Integer(), nullable=False),
        sa.Column('body', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('message_id'),
    )
    op.execute("INSERT INTO message_bodies (message_id, body) SELECT id, body FROM messages")
    # A plain ALTER (SQLite 3.35+, which RETURNING needs already), not a batch rebuild: SQLite
    # cannot drop and re-create messages while outbox rows refer to it with foreign keys on,
    # and the drop would cascade into message_bodies.
    op.execute("ALTER TABLE messages DROP COLUMN body")


def downgrade() -> None:
    op.add_column('messages', sa.Column('body', sa.LargeBinary(), nullable=True))
    op.execute("UPDATE messages SET body = (SELECT body FROM message_bodies "
               "WHERE message_bodies.message_id = messages.id)")
    if op.get_bind().dialect.name == "postgresql":
        # SQLite cannot make a column NOT NULL without rebuilding messages (see upgrade): there
        # it stays nullable, and 0004's code writes a body with every message.
        op.alter_column('messages', 'body', existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table('message_bodies')

"""channels: a subscriber's destination is (channel, address); messages carry their channel

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing subscriber and message was an email: the server default says so.
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=16), server_default='email', nullable=False))
        batch_op.alter_column('email', new_column_name='address', existing_type=sa.String(length=320),
                              type_=sa.String(length=2000), existing_nullable=False)
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=16), server_default='email', nullable=False))
        batch_op.alter_column('recipient', existing_type=sa.String(length=320),
                              type_=sa.String(length=2000), existing_nullable=False)


def downgrade() -> None:
    # Only email subscribers fit the older schema; other channels' rows are dropped with their mail.
    op.execute("DELETE FROM outbox WHERE subscriber_id IN (SELECT id FROM subscribers WHERE channel <> 'email')")
    op.execute("DELETE FROM messages WHERE channel <> 'email'")
    op.execute("DELETE FROM subscribers WHERE channel <> 'email'")
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.alter_column('recipient', existing_type=sa.String(length=2000),
                              type_=sa.String(length=320), existing_nullable=False)
        batch_op.drop_column('channel')
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.alter_column('address', new_column_name='email', existing_type=sa.String(length=2000),
                              type_=sa.String(length=320), existing_nullable=False)
        batch_op.drop_column('channel')

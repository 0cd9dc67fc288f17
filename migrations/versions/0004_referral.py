"""referral: a subscriber's location, a trial's record problems, recruiting alternatives per poll

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 20:55:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('location', sa.String(length=200), nullable=True))
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('problems', sa.Text(), nullable=True))
    op.create_table(
        'alternatives',
        sa.Column('nct_id', sa.String(length=11), nullable=False),
        sa.Column('data_timestamp', sa.String(length=40), nullable=True),
        sa.Column('computed_at', sa.DateTime(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('nct_id'),
    )


def downgrade() -> None:
    op.drop_table('alternatives')
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('problems')
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_column('location')

"""registry history: the version list of each trial, backfilled versions, historical changes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 19:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('registry_histories',
    sa.Column('nct_id', sa.String(length=11), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('fetched_at', sa.DateTime(), nullable=False),
    sa.Column('seam_version', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['nct_id'], ['trials.nct_id'], ),
    sa.PrimaryKeyConstraint('nct_id')
    )
    op.create_table('registry_versions',
    sa.Column('nct_id', sa.String(length=11), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('date', sa.String(length=10), nullable=False),
    sa.Column('overall_status', sa.String(length=32), nullable=True),
    sa.Column('modules', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['nct_id'], ['trials.nct_id'], ),
    sa.PrimaryKeyConstraint('nct_id', 'version')
    )
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('registry_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('registry_date', sa.String(length=10), nullable=True))
    with op.batch_alter_table('changes', schema=None) as batch_op:
        # Existing changes were all live news: false for every old row.
        batch_op.add_column(sa.Column('historical', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('registry_date', sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.drop_column('registry_date')
        batch_op.drop_column('historical')
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_column('registry_date')
        batch_op.drop_column('registry_version')
        batch_op.drop_column('source')
    op.drop_table('registry_versions')
    op.drop_table('registry_histories')

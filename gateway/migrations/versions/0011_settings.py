"""settings: console-set provider keys, feature opt-ins, agent id and role

Revision ID: 0011
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('provider', schema=None) as batch_op:
        batch_op.add_column(sa.Column('console_key_enc', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('console_key_hint', sa.String(length=8), nullable=True))
    with op.batch_alter_table('agent_config', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agent_id', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('role', sa.String(length=120), nullable=True))
    op.create_table(
        'feature_opt_in',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('layer', sa.String(length=32), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('updated_by', sa.String(length=254), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_feature_opt_in_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_feature_opt_in')),
        sa.UniqueConstraint('org_id', 'layer', name=op.f('uq_feature_opt_in_org_id')),
    )
    with op.batch_alter_table('feature_opt_in', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feature_opt_in_org_id'), ['org_id'], unique=False)


def downgrade() -> None:
    op.drop_table('feature_opt_in')
    with op.batch_alter_table('agent_config', schema=None) as batch_op:
        batch_op.drop_column('role')
        batch_op.drop_column('agent_id')
    with op.batch_alter_table('provider', schema=None) as batch_op:
        batch_op.drop_column('console_key_hint')
        batch_op.drop_column('console_key_enc')

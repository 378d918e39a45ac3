"""top-up requests: credits asked for on the dashboard, approved or rejected by an operator

Revision ID: 0010
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0014'
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'topup_request',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('amount_micros', BIG, nullable=False),
        sa.Column('note', sa.String(length=500), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('requested_by', sa.String(length=254), nullable=False),
        sa.Column('decided_by', sa.String(length=254), nullable=True),
        sa.Column('decided_at', sa.DateTime(), nullable=True),
        sa.Column('txn_id', BIG, nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_topup_request_org_id_org')),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_topup_request_user_id_user')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_topup_request')),
    )
    with op.batch_alter_table('topup_request', schema=None) as batch_op:
        batch_op.create_index('ix_topup_request_org_created', ['org_id', 'created_at'], unique=False)
        batch_op.create_index('ix_topup_request_status', ['status', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_table('topup_request')

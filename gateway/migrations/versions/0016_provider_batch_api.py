"""provider.batch_api: whether the provider has a batch API (None: decided from its kind and address)

Revision ID: 0016
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('provider', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_api', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('provider', schema=None) as batch_op:
        batch_op.drop_column('batch_api')

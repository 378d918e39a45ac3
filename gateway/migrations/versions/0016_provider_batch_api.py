"""provider.batch_api: whether the provider has a batch API (None: decided from its kind and address);
batch_request.cache_write_tokens: the cache writes a provider billed on a batch request;
batch_request.usage_estimated: the provider's counts were malformed and the gateway estimated them

Revision ID: 0016
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('provider', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_api', sa.Boolean(), nullable=True))
    with op.batch_alter_table('batch_request', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cache_write_tokens', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('usage_estimated', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('batch_request', schema=None) as batch_op:
        batch_op.drop_column('usage_estimated')
        batch_op.drop_column('cache_write_tokens')
    with op.batch_alter_table('provider', schema=None) as batch_op:
        batch_op.drop_column('batch_api')

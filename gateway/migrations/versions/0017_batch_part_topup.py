"""batch_part.topup_micros: what was added to a batch's hold when its part fell back to the gateway's
own run (normal price instead of the batch price), held under its own name until settlement

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch_part', schema=None) as batch_op:
        batch_op.add_column(sa.Column('topup_micros', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('batch_part', schema=None) as batch_op:
        batch_op.drop_column('topup_micros')

"""ledger_entry.benchmark_estimated: the row's benchmark holds an estimate (tokens a layer removed
scaled to the provider's count, the provider's automatic caching from prefixes seen)

Revision ID: 0014
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('benchmark_estimated', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.drop_column('benchmark_estimated')

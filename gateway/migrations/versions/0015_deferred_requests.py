"""deferred requests (batch arbitrage kept in the database until their batch), apps' webhook URL and
secret, apps' default deferral

Revision ID: 0015
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0009'
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'deferred_request',
        sa.Column('id', BIGINT, nullable=False),
        sa.Column('request_id', sa.String(length=64), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('key_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('app_id', sa.Integer(), nullable=True),
        sa.Column('provider', sa.String(length=64), nullable=False),
        sa.Column('body_z', sa.LargeBinary(), nullable=False),
        sa.Column('held_micros', BIGINT, nullable=False),
        sa.Column('hold_ref', sa.String(length=64), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('claim_token', sa.String(length=64), nullable=True),
        sa.Column('claimed_by', sa.String(length=32), nullable=True),
        sa.Column('claimed_at', sa.DateTime(), nullable=True),
        sa.Column('batch_id', BIGINT, nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('webhook_state', sa.String(length=16), nullable=False),
        sa.Column('webhook_attempts', sa.Integer(), nullable=False),
        sa.Column('webhook_next_at', sa.DateTime(), nullable=True),
        sa.Column('webhook_error', sa.Text(), nullable=True),
        sa.Column('delivered_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_deferred_request_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_deferred_request')),
        sa.UniqueConstraint('request_id', name=op.f('uq_deferred_request_request_id')),
    )
    with op.batch_alter_table('deferred_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deferred_request_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deferred_request_claim_token'), ['claim_token'], unique=False)
        batch_op.create_index(batch_op.f('ix_deferred_request_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index('ix_deferred_request_queue', ['status', 'org_id', 'provider', 'created_at'],
                              unique=False)
        batch_op.create_index('ix_deferred_request_webhook', ['webhook_state', 'webhook_next_at'], unique=False)
    with op.batch_alter_table('app', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_url', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('webhook_secret_enc', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('arbitrage_deadline_seconds', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('app', schema=None) as batch_op:
        batch_op.drop_column('arbitrage_deadline_seconds')
        batch_op.drop_column('webhook_secret_enc')
        batch_op.drop_column('webhook_url')
    op.drop_table('deferred_request')

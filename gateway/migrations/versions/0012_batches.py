"""batches: files, batches, provider parts and requests; the route's batch price

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'batch_file',
        sa.Column('id', BIG, nullable=False),
        sa.Column('public_id', sa.String(length=64), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('purpose', sa.String(length=32), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('bytes', BIG, nullable=False),
        sa.Column('lines', sa.Integer(), nullable=False),
        sa.Column('content_z', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_batch_file_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_file')),
        sa.UniqueConstraint('public_id', name=op.f('uq_batch_file_public_id')),
    )
    op.create_index(op.f('ix_batch_file_org_id'), 'batch_file', ['org_id'], unique=False)
    op.create_table(
        'batch',
        sa.Column('id', BIG, nullable=False),
        sa.Column('public_id', sa.String(length=64), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('key_id', sa.Integer(), nullable=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('app_id', sa.Integer(), nullable=True),
        sa.Column('api', sa.String(length=16), nullable=False),
        sa.Column('mechanism', sa.String(length=32), nullable=False),
        sa.Column('endpoint', sa.String(length=64), nullable=False),
        sa.Column('input_file_id', sa.String(length=64), nullable=True),
        sa.Column('completion_window', sa.String(length=8), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('metadata_json', sa.Text(), nullable=True),
        sa.Column('errors_json', sa.Text(), nullable=True),
        sa.Column('output_file_id', sa.String(length=64), nullable=True),
        sa.Column('error_file_id', sa.String(length=64), nullable=True),
        sa.Column('idempotency_key', sa.String(length=255), nullable=True),
        sa.Column('fingerprint', sa.String(length=64), nullable=True),
        *[sa.Column(name, sa.Integer(), nullable=False)
          for name in ('total', 'succeeded', 'errored', 'canceled', 'expired')],
        *[sa.Column(name, BIG, nullable=False)
          for name in ('input_tokens', 'output_tokens', 'held_micros', 'benchmark_micros', 'charge_micros',
                       'saved_micros')],
        sa.Column('settled', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        *[sa.Column(name, sa.DateTime(), nullable=True)
          for name in ('in_progress_at', 'finalizing_at', 'completed_at', 'failed_at', 'expired_at',
                       'cancelling_at', 'cancelled_at', 'expires_at')],
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_batch_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_batch')),
        sa.UniqueConstraint('public_id', name=op.f('uq_batch_public_id')),
        sa.UniqueConstraint('org_id', 'idempotency_key', name=op.f('uq_batch_org_id')),
    )
    op.create_index(op.f('ix_batch_org_id'), 'batch', ['org_id'], unique=False)
    op.create_index(op.f('ix_batch_settled'), 'batch', ['settled'], unique=False)
    op.create_index('ix_batch_org_created', 'batch', ['org_id', 'created_at'], unique=False)
    op.create_table(
        'batch_part',
        sa.Column('id', BIG, nullable=False),
        sa.Column('batch_id', BIG, nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('provider', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('upstream_id', sa.String(length=128), nullable=True),
        sa.Column('upstream_file_id', sa.String(length=128), nullable=True),
        sa.Column('output_upstream_file_id', sa.String(length=128), nullable=True),
        sa.Column('error_upstream_file_id', sa.String(length=128), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('done', sa.Boolean(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('poll_seconds', sa.Integer(), nullable=False),
        sa.Column('next_poll_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_batch_part_batch_id_batch'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_batch_part_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_part')),
    )
    op.create_index(op.f('ix_batch_part_batch_id'), 'batch_part', ['batch_id'], unique=False)
    op.create_index(op.f('ix_batch_part_org_id'), 'batch_part', ['org_id'], unique=False)
    op.create_table(
        'batch_request',
        sa.Column('id', BIG, nullable=False),
        sa.Column('batch_id', BIG, nullable=False),
        sa.Column('part_id', BIG, nullable=True),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('request_id', sa.String(length=64), nullable=False),
        sa.Column('key_id', sa.Integer(), nullable=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('app_id', sa.Integer(), nullable=True),
        sa.Column('custom_id', sa.String(length=512), nullable=False),
        sa.Column('line', sa.Integer(), nullable=False),
        sa.Column('requested_model', sa.String(length=160), nullable=False),
        sa.Column('model', sa.String(length=160), nullable=False),
        sa.Column('provider', sa.String(length=64), nullable=False),
        sa.Column('upstream_model', sa.String(length=160), nullable=False),
        sa.Column('prices_json', sa.Text(), nullable=False),
        sa.Column('body_z', sa.LargeBinary(), nullable=False),
        sa.Column('held_micros', BIG, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        *[sa.Column(name, sa.Integer(), nullable=False)
          for name in ('input_tokens', 'output_tokens', 'cached_tokens')],
        *[sa.Column(name, BIG, nullable=False) for name in ('benchmark_micros', 'charge_micros', 'saved_micros')],
        sa.Column('upstream_id', sa.String(length=128), nullable=True),
        sa.Column('result_z', sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_batch_request_batch_id_batch'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['part_id'], ['batch_part.id'], name=op.f('fk_batch_request_part_id_batch_part'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_batch_request_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_request')),
        sa.UniqueConstraint('request_id', name=op.f('uq_batch_request_request_id')),
        sa.UniqueConstraint('batch_id', 'custom_id', name=op.f('uq_batch_request_batch_id')),
    )
    for column in ('batch_id', 'part_id', 'org_id'):
        op.create_index(op.f(f'ix_batch_request_{column}'), 'batch_request', [column], unique=False)
    op.add_column('route', sa.Column('batch_price_pct', sa.Integer(), nullable=True))  # plain ADD COLUMN


def downgrade() -> None:
    with op.batch_alter_table('route', schema=None) as batch_op:
        batch_op.drop_column('batch_price_pct')
    op.drop_table('batch_request')
    op.drop_table('batch_part')
    op.drop_table('batch')
    op.drop_table('batch_file')

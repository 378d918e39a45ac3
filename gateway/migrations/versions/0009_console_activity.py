"""console activity: error reports, content logging (settings and encrypted conversations), indexes
for per-user activity and every org's party rollups, daily party rollups

Revision ID: 0009
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0010'
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
SUMS = ('requests', 'errors', 'input_tokens', 'output_tokens', 'benchmark_micros', 'charge_micros', 'saved_micros')


def upgrade() -> None:
    op.create_table(
        'error_report',
        sa.Column('id', BIGINT, nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('model', sa.String(length=160), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('status', sa.Integer(), nullable=True),
        sa.Column('key_id', sa.Integer(), nullable=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('app_id', sa.Integer(), nullable=True),
        sa.Column('agent', sa.String(length=120), nullable=False),
        sa.Column('version', sa.String(length=64), nullable=False),
        sa.Column('request_id', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_error_report_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_error_report')),
    )
    with op.batch_alter_table('error_report', schema=None) as batch_op:
        batch_op.create_index('ix_error_report_org_created', ['org_id', 'created_at'], unique=False)
        batch_op.create_index('ix_error_report_created', ['created_at'], unique=False)
    op.create_table(
        'content_log_setting',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('app_id', sa.Integer(), nullable=True),
        sa.Column('retention_days', sa.Integer(), nullable=False),
        sa.Column('updated_by', sa.String(length=254), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['app_id'], ['app.id'], name=op.f('fk_content_log_setting_app_id_app')),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_content_log_setting_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_content_log_setting')),
        sa.UniqueConstraint('org_id', 'app_id', name=op.f('uq_content_log_setting_org_id')),
    )
    with op.batch_alter_table('content_log_setting', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_content_log_setting_org_id'), ['org_id'], unique=False)
    op.create_table(
        'content_log',
        sa.Column('id', BIGINT, nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('app_id', sa.Integer(), nullable=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('request_id', sa.String(length=64), nullable=False),
        sa.Column('input_enc', sa.LargeBinary(), nullable=False),
        sa.Column('output_enc', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_content_log_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_content_log')),
        sa.UniqueConstraint('request_id', name=op.f('uq_content_log_request_id')),
    )
    with op.batch_alter_table('content_log', schema=None) as batch_op:
        batch_op.create_index('ix_content_log_org_created', ['org_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_content_log_expires_at'), ['expires_at'], unique=False)
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_user_created', ['user_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_ledger_app_created', ['app_id', 'created_at', 'id'], unique=False)
    with op.batch_alter_table('party_rollup', schema=None) as batch_op:
        batch_op.create_index('ix_party_rollup_party_hour', ['party', 'hour'], unique=False)
    op.create_table(
        'party_day_rollup',
        sa.Column('id', BIGINT, nullable=False),
        sa.Column('org_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.DateTime(), nullable=False),
        sa.Column('party', sa.String(length=8), nullable=False),
        sa.Column('party_id', sa.Integer(), nullable=False),
        *[sa.Column(name, BIGINT, nullable=False) for name in SUMS],
        sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_party_day_rollup_org_id_org')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_party_day_rollup')),
        sa.UniqueConstraint('org_id', 'party', 'day', 'party_id', name=op.f('uq_party_day_rollup_org_id')),
    )
    with op.batch_alter_table('party_day_rollup', schema=None) as batch_op:
        batch_op.create_index('ix_party_day_rollup_party_day', ['party', 'day'], unique=False)
    # the days so far, from the hourly party rollups
    bind = op.get_bind()
    day = ("date_trunc('day', hour)" if bind.dialect.name == 'postgresql'
           else "strftime('%Y-%m-%d 00:00:00.000000', hour)")
    sums = ', '.join(SUMS)
    op.execute(f"INSERT INTO party_day_rollup (org_id, day, party, party_id, {sums}) "
               f"SELECT org_id, {day}, party, party_id, {', '.join(f'sum({s})' for s in SUMS)} FROM party_rollup "
               f"GROUP BY org_id, {day}, party, party_id")


def downgrade() -> None:
    op.drop_table('party_day_rollup')
    with op.batch_alter_table('party_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_party_rollup_party_hour')
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_app_created')
        batch_op.drop_index('ix_ledger_user_created')
    op.drop_table('content_log')
    op.drop_table('content_log_setting')
    op.drop_table('error_report')

"""data protection: settings, custom rules, activity and daily rollups

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-04 16:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0003'
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('dlp_setting',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('app_id', sa.Integer(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('rules', sa.JSON(), nullable=False),
    sa.Column('regions', sa.JSON(), nullable=True),
    sa.Column('updated_by', sa.String(length=254), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['app_id'], ['app.id'], name=op.f('fk_dlp_setting_app_id_app')),
    sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_dlp_setting_org_id_org')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dlp_setting')),
    sa.UniqueConstraint('org_id', 'app_id', name=op.f('uq_dlp_setting_org_id'))
    )
    with op.batch_alter_table('dlp_setting', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dlp_setting_org_id'), ['org_id'], unique=False)
    op.create_table('dlp_custom_rule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('pattern', sa.String(length=500), nullable=False),
    sa.Column('created_by', sa.String(length=254), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_dlp_custom_rule_org_id_org')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dlp_custom_rule')),
    sa.UniqueConstraint('org_id', 'name', name=op.f('uq_dlp_custom_rule_org_id'))
    )
    with op.batch_alter_table('dlp_custom_rule', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dlp_custom_rule_org_id'), ['org_id'], unique=False)
    op.create_table('dlp_event',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('app_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('matches', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('endpoint', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_dlp_event_org_id_org')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dlp_event'))
    )
    with op.batch_alter_table('dlp_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dlp_event_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dlp_event_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_dlp_event_request_id'), ['request_id'], unique=False)
    op.create_table('dlp_rollup',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.DateTime(), nullable=False),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('requests', BIGINT, nullable=False),
    sa.Column('matches', BIGINT, nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['org.id'], name=op.f('fk_dlp_rollup_org_id_org')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dlp_rollup')),
    sa.UniqueConstraint('org_id', 'day', 'rule', 'action', name=op.f('uq_dlp_rollup_org_id'))
    )
    with op.batch_alter_table('dlp_rollup', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dlp_rollup_org_id'), ['org_id'], unique=False)


def downgrade() -> None:
    for table in ('dlp_rollup', 'dlp_event', 'dlp_custom_rule', 'dlp_setting'):
        op.drop_table(table)

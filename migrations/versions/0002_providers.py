"""AI providers and their keys, encrypted at rest, and the known encryption keys.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('encryption_keys',
    sa.Column('digest', sa.String(length=7), nullable=False),
    sa.Column('test_ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('digest', name=op.f('pk_encryption_keys'))
    )

    op.create_table('ai_providers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=128), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('base_url', sa.String(length=2048), nullable=False),
    sa.Column('key_policy', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("key_policy IN ('provider_only', 'user_preferred', 'user_only')", name=op.f('ck_ai_providers_key_policy')),
    sa.CheckConstraint("type IN ('openai', 'anthropic', 'azure', 'bedrock', 'google', 'openai-compat', 'openrouter', 'vercel')", name=op.f('ck_ai_providers_type')),
    sa.CheckConstraint('deleted = (deleted_at IS NOT NULL)', name=op.f('ck_ai_providers_deleted_at')),
    sa.CheckConstraint('length(name) BETWEEN 1 AND 64 AND name = lower(name)', name=op.f('ck_ai_providers_name')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ai_providers'))
    )
    with op.batch_alter_table('ai_providers', schema=None) as batch_op:
        batch_op.create_index('uq_ai_providers_name_live', ['name'], unique=True, postgresql_where=sa.text('NOT deleted'), sqlite_where=sa.text('NOT deleted'))

    op.create_table('ai_provider_keys',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('provider_id', sa.Uuid(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('key_digest', sa.String(length=7), nullable=False),
    sa.Column('hint', sa.String(length=16), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_digest'], ['encryption_keys.digest'], name=op.f('fk_ai_provider_keys_key_digest_encryption_keys')),
    sa.ForeignKeyConstraint(['provider_id'], ['ai_providers.id'], name=op.f('fk_ai_provider_keys_provider_id_ai_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ai_provider_keys')),
    sa.UniqueConstraint('provider_id', 'fingerprint', name='uq_ai_provider_keys_provider_fingerprint')
    )
    with op.batch_alter_table('ai_provider_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ai_provider_keys_key_digest'), ['key_digest'], unique=False)
        batch_op.create_index('ix_ai_provider_keys_provider_created', ['provider_id', 'created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('ai_provider_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_ai_provider_keys_provider_created')
        batch_op.drop_index(batch_op.f('ix_ai_provider_keys_key_digest'))
    op.drop_table('ai_provider_keys')

    with op.batch_alter_table('ai_providers', schema=None) as batch_op:
        batch_op.drop_index('uq_ai_providers_name_live', postgresql_where=sa.text('NOT deleted'), sqlite_where=sa.text('NOT deleted'))
    op.drop_table('ai_providers')

    op.drop_table('encryption_keys')

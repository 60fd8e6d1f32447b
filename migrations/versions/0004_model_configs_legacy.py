"""Chat model configs and the legacy chat providers with their user keys.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('chat_providers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('display_name', sa.String(length=128), nullable=False),
    sa.Column('api_key_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('api_key_digest', sa.String(length=7), nullable=True),
    sa.Column('api_key_hint', sa.String(length=16), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('base_url', sa.String(length=2048), nullable=False),
    sa.Column('central_api_key_enabled', sa.Boolean(), nullable=False),
    sa.Column('allow_user_api_key', sa.Boolean(), nullable=False),
    sa.Column('allow_central_api_key_fallback', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("provider IN ('openai', 'anthropic', 'azure', 'bedrock', 'google', 'openai-compat', 'openrouter', 'vercel')", name=op.f('ck_chat_providers_provider')),
    sa.CheckConstraint('(api_key_ciphertext IS NULL) = (api_key_digest IS NULL)', name=op.f('ck_chat_providers_api_key_digest')),
    sa.CheckConstraint('NOT allow_central_api_key_fallback OR (central_api_key_enabled AND allow_user_api_key)', name=op.f('ck_chat_providers_fallback')),
    sa.CheckConstraint('central_api_key_enabled OR allow_user_api_key', name=op.f('ck_chat_providers_credential_source')),
    sa.ForeignKeyConstraint(['api_key_digest'], ['encryption_keys.digest'], name=op.f('fk_chat_providers_api_key_digest_encryption_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_providers')),
    sa.UniqueConstraint('provider', name=op.f('uq_chat_providers_provider'))
    )
    with op.batch_alter_table('chat_providers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_providers_api_key_digest'), ['api_key_digest'], unique=False)

    op.create_table('user_chat_provider_keys',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('chat_provider_id', sa.Uuid(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('key_digest', sa.String(length=7), nullable=False),
    sa.Column('hint', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chat_provider_id'], ['chat_providers.id'], name=op.f('fk_user_chat_provider_keys_chat_provider_id_chat_providers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['key_digest'], ['encryption_keys.digest'], name=op.f('fk_user_chat_provider_keys_key_digest_encryption_keys')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_chat_provider_keys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_chat_provider_keys')),
    sa.UniqueConstraint('user_id', 'chat_provider_id', name='uq_user_chat_provider_keys_user_provider')
    )
    with op.batch_alter_table('user_chat_provider_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_chat_provider_keys_key_digest'), ['key_digest'], unique=False)
        batch_op.create_index('ix_user_chat_provider_keys_provider', ['chat_provider_id'], unique=False)

    op.create_table('chat_model_configs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('ai_provider_id', sa.Uuid(), nullable=True),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('context_limit', sa.Integer(), nullable=False),
    sa.Column('compression_threshold', sa.Integer(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('updated_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("provider IN ('openai', 'anthropic', 'azure', 'bedrock', 'google', 'openai-compat', 'openrouter', 'vercel')", name=op.f('ck_chat_model_configs_provider')),
    sa.CheckConstraint('NOT (deleted AND is_default)', name=op.f('ck_chat_model_configs_deleted_default')),
    sa.CheckConstraint('compression_threshold BETWEEN 0 AND 100', name=op.f('ck_chat_model_configs_compression_threshold')),
    sa.CheckConstraint('context_limit > 0', name=op.f('ck_chat_model_configs_context_limit')),
    sa.CheckConstraint('deleted = (deleted_at IS NOT NULL)', name=op.f('ck_chat_model_configs_deleted_at')),
    sa.ForeignKeyConstraint(['ai_provider_id'], ['ai_providers.id'], name=op.f('fk_chat_model_configs_ai_provider_id_ai_providers')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_chat_model_configs_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['updated_by'], ['users.id'], name=op.f('fk_chat_model_configs_updated_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_model_configs'))
    )
    with op.batch_alter_table('chat_model_configs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_model_configs_ai_provider_id'), ['ai_provider_id'], unique=False)
        batch_op.create_index('uq_chat_model_configs_default', ['is_default'], unique=True, postgresql_where=sa.text('is_default AND NOT deleted'), sqlite_where=sa.text('is_default AND NOT deleted'))
        batch_op.create_index('uq_chat_model_configs_legacy_model_live', ['provider', 'model'], unique=True, postgresql_where=sa.text('NOT deleted AND ai_provider_id IS NULL'), sqlite_where=sa.text('NOT deleted AND ai_provider_id IS NULL'))
        batch_op.create_index('uq_chat_model_configs_provider_model_live', ['ai_provider_id', 'model'], unique=True, postgresql_where=sa.text('NOT deleted AND ai_provider_id IS NOT NULL'), sqlite_where=sa.text('NOT deleted AND ai_provider_id IS NOT NULL'))


def downgrade():
    with op.batch_alter_table('chat_model_configs', schema=None) as batch_op:
        batch_op.drop_index('uq_chat_model_configs_provider_model_live', postgresql_where=sa.text('NOT deleted AND ai_provider_id IS NOT NULL'), sqlite_where=sa.text('NOT deleted AND ai_provider_id IS NOT NULL'))
        batch_op.drop_index('uq_chat_model_configs_legacy_model_live', postgresql_where=sa.text('NOT deleted AND ai_provider_id IS NULL'), sqlite_where=sa.text('NOT deleted AND ai_provider_id IS NULL'))
        batch_op.drop_index('uq_chat_model_configs_default', postgresql_where=sa.text('is_default AND NOT deleted'), sqlite_where=sa.text('is_default AND NOT deleted'))
        batch_op.drop_index(batch_op.f('ix_chat_model_configs_ai_provider_id'))
    op.drop_table('chat_model_configs')

    with op.batch_alter_table('user_chat_provider_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_user_chat_provider_keys_provider')
        batch_op.drop_index(batch_op.f('ix_user_chat_provider_keys_key_digest'))
    op.drop_table('user_chat_provider_keys')

    with op.batch_alter_table('chat_providers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_providers_api_key_digest'))
    op.drop_table('chat_providers')

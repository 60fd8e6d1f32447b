"""Users' own provider keys (BYOK).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('user_ai_provider_keys',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('ai_provider_id', sa.Uuid(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('key_digest', sa.String(length=7), nullable=False),
    sa.Column('hint', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ai_provider_id'], ['ai_providers.id'], name=op.f('fk_user_ai_provider_keys_ai_provider_id_ai_providers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['key_digest'], ['encryption_keys.digest'], name=op.f('fk_user_ai_provider_keys_key_digest_encryption_keys')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_ai_provider_keys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_ai_provider_keys')),
    sa.UniqueConstraint('user_id', 'ai_provider_id', name='uq_user_ai_provider_keys_user_provider')
    )
    with op.batch_alter_table('user_ai_provider_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_ai_provider_keys_key_digest'), ['key_digest'], unique=False)
        batch_op.create_index('ix_user_ai_provider_keys_provider', ['ai_provider_id'], unique=False)


def downgrade():
    with op.batch_alter_table('user_ai_provider_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_user_ai_provider_keys_provider')
        batch_op.drop_index(batch_op.f('ix_user_ai_provider_keys_key_digest'))
    op.drop_table('user_ai_provider_keys')

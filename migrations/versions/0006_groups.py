"""Groups, memberships, and who may use each model config (SPEC section 9).

Groups are deleted for good; their memberships and their rows in model_config_groups cascade,
so no row can point at a deleted group. Existing configs stay open to everyone.

Revision ID: 0006
Revises: 0005
"""

import warnings
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


LISTING_INDEX = "ix_chat_model_configs_listing"  # from 0005
LISTING_COLUMNS = [sa.text("is_default DESC"), sa.text("lower(coalesce(nullif(display_name, ''), model))"), "model", "id"]


@contextmanager
def _configs_table():
    """Alter chat_model_configs. SQLite rebuilds the table to add a CHECK constraint and cannot
    carry over the expression index of 0005 (it cannot reflect it), so that index is made again."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    with warnings.catch_warnings():
        # SQLAlchemy warns that it skips reflecting that index: known, and handled just below.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        with op.batch_alter_table("chat_model_configs") as batch_op:
            yield batch_op
    if sqlite:
        op.execute(f"DROP INDEX IF EXISTS {LISTING_INDEX}")
        op.create_index(LISTING_INDEX, "chat_model_configs", LISTING_COLUMNS)


def upgrade():
    op.create_table(
        "groups",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 64 AND name = lower(name)", name=op.f("ck_groups_name")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_groups_name")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('manual', 'sso')", name=op.f("ck_group_members_source")),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], name=op.f("fk_group_members_group_id_groups"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_group_members_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )
    op.create_index("ix_group_members_user", "group_members", ["user_id"])
    op.create_table(
        "model_config_groups",
        sa.Column("model_config_id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], name=op.f("fk_model_config_groups_group_id_groups"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_config_id"], ["chat_model_configs.id"],
                                name=op.f("fk_model_config_groups_model_config_id_chat_model_configs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_config_id", "group_id", name=op.f("pk_model_config_groups")),
    )
    op.create_index("ix_model_config_groups_group", "model_config_groups", ["group_id"])
    with _configs_table() as batch_op:
        batch_op.add_column(sa.Column("access", sa.String(length=16), nullable=False, server_default="everyone"))
        batch_op.create_check_constraint("access", "access IN ('everyone', 'groups')")


def downgrade():
    # Without the access column every config would be open to everyone: fail closed instead, the
    # configs open only to some groups are disabled (an administrator re-enables what they mean).
    op.execute(sa.text("UPDATE chat_model_configs SET enabled = :off WHERE access = 'groups'").bindparams(off=False))
    with _configs_table() as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_chat_model_configs_access"), type_="check")
        batch_op.drop_column("access")
    op.drop_index("ix_model_config_groups_group", table_name="model_config_groups")
    op.drop_table("model_config_groups")
    op.drop_index("ix_group_members_user", table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("groups")

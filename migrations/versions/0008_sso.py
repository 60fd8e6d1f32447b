"""Single sign-on (SPEC section 10): users' identities at the OpenID provider, and users without
a password (made just in time by a sign-in through the provider).

On SQLite, making `users.password_hash` nullable rebuilds the users table (copy, drop, rename).
With foreign keys on, dropping it would run every ON DELETE action that points at it and empty
the sessions, tokens, users' keys and memberships (and clear the audit log's actors), so the
rebuild runs with foreign keys off, which SQLite allows only between transactions, and checks
them before turning them back on. PostgreSQL alters the column in place.

Downgrade: users without a password get the unusable hash "!" (argon2 refuses it, so nobody can
sign in with it) before the column is NOT NULL again; their identities go.

Revision ID: 0008
Revises: 0007
"""

from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UNUSABLE_HASH = "!"


@contextmanager
def _users_table():
    """`batch_alter_table("users")`, keeping every row that references a user on SQLite."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        with op.batch_alter_table("users") as batch_op:
            yield batch_op
        return
    op.execute("COMMIT")  # PRAGMA foreign_keys does nothing inside a transaction
    op.execute("PRAGMA foreign_keys=OFF")
    op.execute("BEGIN IMMEDIATE")
    with op.batch_alter_table("users", recreate="always") as batch_op:
        yield batch_op
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"rebuilding users broke {len(broken)} foreign key(s); nothing was changed")
    op.execute("COMMIT")
    op.execute("PRAGMA foreign_keys=ON")
    op.execute("BEGIN IMMEDIATE")


def upgrade():
    op.create_table(
        "user_identities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("issuer", sa.String(length=512), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_user_identities_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_identities")),
        sa.UniqueConstraint("issuer", "subject", name=op.f("uq_user_identities_issuer_subject")),
    )
    op.create_index(op.f("ix_user_identities_user_id"), "user_identities", ["user_id"])
    with _users_table() as batch_op:
        batch_op.alter_column("password_hash", existing_type=sa.String(length=255), nullable=True)


def downgrade():
    op.drop_index(op.f("ix_user_identities_user_id"), table_name="user_identities")
    op.drop_table("user_identities")
    op.execute(sa.text("UPDATE users SET password_hash = :unusable WHERE password_hash IS NULL")
               .bindparams(unusable=UNUSABLE_HASH))
    with _users_table() as batch_op:
        batch_op.alter_column("password_hash", existing_type=sa.String(length=255), nullable=False)

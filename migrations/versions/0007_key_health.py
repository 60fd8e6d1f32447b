"""Key health (SPEC section 11): every stored key remembers its latest test or report.

Nullable columns (null until tested) on the four tables that hold keys; no rewrite of existing
rows, so plain ADD COLUMN on both databases.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = {
    "ai_provider_keys": ("last_tested_at", "last_test_result"),
    "user_ai_provider_keys": ("last_tested_at", "last_test_result"),
    "user_chat_provider_keys": ("last_tested_at", "last_test_result"),
    "chat_providers": ("api_key_last_tested_at", "api_key_last_test_result"),
}


def upgrade():
    for table, (tested_at, result) in COLUMNS.items():
        op.add_column(table, sa.Column(tested_at, sa.DateTime(timezone=True), nullable=True))
        op.add_column(table, sa.Column(result, sa.String(length=32), nullable=True))


def downgrade():
    for table, (tested_at, result) in COLUMNS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column(result)
            batch_op.drop_column(tested_at)

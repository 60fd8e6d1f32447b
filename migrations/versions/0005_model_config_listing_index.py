"""An index in the order model config lists are shown: the default first, then by label.

Without it, every page of GET /model-configs, /model-configs/enabled and the admin list sorts
every live config (a top-N sort of 50,000 rows for 10,000 providers); with it PostgreSQL walks
the index and stops after one page. The expression is the one `_label()` in
app/services/model_configs.py sorts by.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LABEL = "lower(coalesce(nullif(display_name, ''), model))"


def upgrade():
    op.create_index("ix_chat_model_configs_listing", "chat_model_configs",
                    [sa.text("is_default DESC"), sa.text(LABEL), "model", "id"])


def downgrade():
    op.drop_index("ix_chat_model_configs_listing", table_name="chat_model_configs")

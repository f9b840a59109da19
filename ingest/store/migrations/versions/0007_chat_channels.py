"""chat channels: reply routes, URL-only attachments, channel handles

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reply_route",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )

    # MMS and X media are recorded by their URL at the provider: no bytes, no size.
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("url", sa.String(length=2000), nullable=True))
        batch_op.alter_column("size", existing_type=sa.BigInteger(), nullable=True)
        batch_op.alter_column("sha256", existing_type=sa.String(length=64), nullable=True)

    with op.batch_alter_table("contact_identities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handle", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contact_identities", schema=None) as batch_op:
        batch_op.drop_column("handle")

    # Attachments known only by URL cannot exist in the older schema.
    op.execute("DELETE FROM attachments WHERE sha256 IS NULL OR size IS NULL")
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.alter_column("sha256", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("size", existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_column("url")

    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_column("reply_route")

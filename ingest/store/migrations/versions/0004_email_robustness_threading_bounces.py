"""email robustness: dead-letter requeues, quoted-text columns, bounces, suppressions,
automatic-mail bookkeeping and shared settings (the signing secret)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 23:42:33.405695
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ingest.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", ingest.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_settings")),
    )
    op.create_table(
        "bounces",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column("original_message_id", sa.String(length=998), nullable=True),
        sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "journal_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("received_at", ingest.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_bounces_case_id_cases")),
        sa.ForeignKeyConstraint(
            ["journal_id"], ["journal.id"], name=op.f("fk_bounces_journal_id_journal")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounces")),
    )
    with op.batch_alter_table("bounces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bounces_address_received_at"), ["address", "received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_bounces_case_id"), ["case_id"], unique=False)

    op.create_table(
        "suppressions",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("bounce_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", ingest.store.types.UTCDateTime(), nullable=False),
        sa.Column("until", ingest.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bounce_id"], ["bounces.id"], name=op.f("fk_suppressions_bounce_id_bounces")
        ),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_suppressions")),
    )
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("new_text", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=True))

    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requeues", sa.Integer(), server_default="0", nullable=False))

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("automatic", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_outbox_recipient_created_at"), ["recipient", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_recipient_created_at"))
        batch_op.drop_column("automatic")

    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.drop_column("requeues")

    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_column("signature")
        batch_op.drop_column("new_text")

    op.drop_table("suppressions")
    with op.batch_alter_table("bounces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bounces_case_id"))
        batch_op.drop_index(batch_op.f("ix_bounces_address_received_at"))

    op.drop_table("bounces")
    op.drop_table("settings")

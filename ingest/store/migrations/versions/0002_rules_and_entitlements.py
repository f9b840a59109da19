"""rules and entitlements

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:35:03.229630
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ingest.store.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "entitlements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("total_terms", sa.Integer(), nullable=True),
        sa.Column("remaining_terms", sa.Integer(), nullable=True),
        sa.Column("decrement_on", sa.String(length=20), nullable=False),
        sa.Column("restrict", sa.Boolean(), nullable=False),
        sa.Column("sla", sa.String(length=200), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", ingest.store.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", ingest.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_entitlements_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_entitlements_contact_id_contacts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlements")),
    )
    with op.batch_alter_table("entitlements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_entitlements_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_entitlements_contact_id"), ["contact_id"], unique=False
        )

    op.create_table(
        "entitlement_channels",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "entitlement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("total_terms", sa.Integer(), nullable=True),
        sa.Column("remaining_terms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["entitlement_id"],
            ["entitlements.id"],
            name=op.f("fk_entitlement_channels_entitlement_id_entitlements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlement_channels")),
        sa.UniqueConstraint(
            "entitlement_id", "channel", name=op.f("uq_entitlement_channels_entitlement_id_channel")
        ),
    )
    op.create_table(
        "entitlement_contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "entitlement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_entitlement_contacts_contact_id_contacts"),
        ),
        sa.ForeignKeyConstraint(
            ["entitlement_id"],
            ["entitlements.id"],
            name=op.f("fk_entitlement_contacts_entitlement_id_entitlements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlement_contacts")),
        sa.UniqueConstraint(
            "entitlement_id",
            "contact_id",
            name=op.f("uq_entitlement_contacts_entitlement_id_contact_id"),
        ),
    )
    with op.batch_alter_table("entitlement_contacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_entitlement_contacts_contact_id"), ["contact_id"], unique=False
        )

    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rules_version", sa.String(length=40), nullable=True))
        batch_op.add_column(
            sa.Column(
                "entitlement_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )
        batch_op.create_index(
            batch_op.f("ix_cases_entitlement_id"), ["entitlement_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_cases_entitlement_id_entitlements"),
            "entitlements",
            ["entitlement_id"],
            ["id"],
        )

    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rules_version", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.drop_column("reason")
        batch_op.drop_column("rules_version")

    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_cases_entitlement_id_entitlements"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_cases_entitlement_id"))
        batch_op.drop_column("entitlement_id")
        batch_op.drop_column("rules_version")

    with op.batch_alter_table("entitlement_contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_entitlement_contacts_contact_id"))

    op.drop_table("entitlement_contacts")
    op.drop_table("entitlement_channels")
    with op.batch_alter_table("entitlements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_entitlements_contact_id"))
        batch_op.drop_index(batch_op.f("ix_entitlements_account_id"))

    op.drop_table("entitlements")

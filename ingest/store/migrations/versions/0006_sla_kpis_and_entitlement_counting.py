"""sla kpis and entitlement counting

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-26 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ingest.store.types

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sla_kpi_instances",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("policy", sa.String(length=200), nullable=False),
        sa.Column("item", sa.String(length=120), nullable=False),
        sa.Column("kpi", sa.String(length=20), nullable=False),
        sa.Column("success_on", sa.String(length=20), nullable=False),
        sa.Column("calendar", sa.String(length=200), nullable=True),
        sa.Column("warn_minutes", sa.Float(), nullable=True),
        sa.Column("fail_minutes", sa.Float(), nullable=False),
        sa.Column("applicable_from", ingest.store.types.UTCDateTime(), nullable=False),
        sa.Column("paused_minutes", sa.Float(), nullable=False),
        sa.Column("paused_at", ingest.store.types.UTCDateTime(), nullable=True),
        sa.Column("warn_at", ingest.store.types.UTCDateTime(), nullable=True),
        sa.Column("fail_at", ingest.store.types.UTCDateTime(), nullable=False),
        sa.Column("due_at", ingest.store.types.UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("warned_at", ingest.store.types.UTCDateTime(), nullable=True),
        sa.Column("failed_at", ingest.store.types.UTCDateTime(), nullable=True),
        sa.Column("ended_at", ingest.store.types.UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(length=200), nullable=True),
        sa.Column("created_at", ingest.store.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", ingest.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_sla_kpi_instances_case_id_cases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_kpi_instances")),
    )
    with op.batch_alter_table("sla_kpi_instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sla_kpi_instances_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sla_kpi_instances_due_at"), ["due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sla_kpi_instances_status"), ["status"], unique=False)

    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sla_policy", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("first_response_at", ingest.store.types.UTCDateTime(), nullable=True)
        )
        # Existing cases were opened before terms were counted: none is charged.
        batch_op.add_column(
            sa.Column(
                "entitlement_charged", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("entitlement_charged")
        batch_op.drop_column("first_response_at")
        batch_op.drop_column("sla_policy")

    with op.batch_alter_table("sla_kpi_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sla_kpi_instances_status"))
        batch_op.drop_index(batch_op.f("ix_sla_kpi_instances_due_at"))
        batch_op.drop_index(batch_op.f("ix_sla_kpi_instances_case_id"))

    op.drop_table("sla_kpi_instances")

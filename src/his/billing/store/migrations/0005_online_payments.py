"""billing: payments through a payment provider.

- ``payment_intent``: a patient's online payment, started with a provider and marked succeeded
  only by the provider's signed confirmation; ``payment.intent_id`` is unique, so one intent
  makes at most one payment however often it is confirmed.
- ``provider_delivery``: every verified confirmation delivery (by the digest of its signature),
  so the same signed message sent again is refused as a replay; ``provider_event``: every
  provider event applied, so a provider's own retry of an event changes nothing.
- ``test_provider_session``: the embedded TEST payment provider's checkout sessions (it lives in
  the billing process; a real provider keeps these on its side).

Revision ID: billing_0005
Revises: billing_0004
"""

from alembic import op

revision = "billing_0005"
down_revision = "billing_0004"
branch_labels = None
depends_on = None

MONEY = "numeric(12,2)"

STATEMENTS = [
    f"""CREATE TABLE payment_intent (
        id uuid PRIMARY KEY,
        invoice_id uuid NOT NULL REFERENCES invoice (id),
        patient_id uuid NOT NULL,
        amount {MONEY} NOT NULL CHECK (amount > 0),
        currency text NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
        provider text NOT NULL,
        provider_ref text NOT NULL,
        checkout_url text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'succeeded')),
        created_by uuid NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        confirmed_at timestamptz,
        UNIQUE (provider, provider_ref),
        CHECK ((status = 'succeeded') = (confirmed_at IS NOT NULL)))""",
    "CREATE INDEX payment_intent_by_invoice ON payment_intent (invoice_id, created_at)",
    "ALTER TABLE payment ADD COLUMN provider text",
    "ALTER TABLE payment ADD COLUMN intent_id uuid UNIQUE REFERENCES payment_intent (id)",
    # From now on an online payment is one a provider confirmed (older rows are left as they are).
    "ALTER TABLE payment ADD CONSTRAINT payment_online_has_intent CHECK ((method = 'online') = (intent_id IS NOT NULL)"
    " OR kind = 'refund') NOT VALID",
    """CREATE TABLE provider_delivery (
        digest text PRIMARY KEY,
        provider text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX provider_delivery_received_at ON provider_delivery (received_at)",
    """CREATE TABLE provider_event (
        provider text NOT NULL,
        event_id text NOT NULL,
        intent_id uuid REFERENCES payment_intent (id),
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (provider, event_id))""",
    f"""CREATE TABLE test_provider_session (
        ref text PRIMARY KEY,
        intent_id uuid NOT NULL UNIQUE,
        amount {MONEY} NOT NULL CHECK (amount > 0),
        currency text NOT NULL,
        status text NOT NULL CHECK (status IN ('open', 'succeeded')),
        attempts integer NOT NULL DEFAULT 0,
        event_id text UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz,
        delivered_at timestamptz,
        CHECK ((status = 'succeeded') = (event_id IS NOT NULL)))""",
    "CREATE INDEX test_provider_undelivered ON test_provider_session (completed_at) "
    "WHERE status = 'succeeded' AND delivered_at IS NULL",
]


def upgrade() -> None:
    for stmt in STATEMENTS:
        op.execute(stmt)


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")

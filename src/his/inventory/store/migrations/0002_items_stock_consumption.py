"""inventory: items, stock per (item, location, lot, expiry), receipts, consumptions and the lots
they took from, back-orders, low-stock alerts, and the laboratory's reagent use per test.

``stock_lot.quantity >= 0`` is the database's last word on negative stock. ``item_location``
holds the threshold and the low-stock state of an (item, location) and is the row every change
of that stock locks first, so changes of one (item, location) are serialised and the alert
state always matches the stock. A consumption or back-order of a lab order is unique per
(order, item): a redelivered or replayed result never consumes twice.

Seeded: the reagent items, which of them each of the laboratory's catalogue tests uses, and a
starting stock of each at LAB (one lot, expiring a year after the migration ran).

Revision ID: inventory_0002
Revises: inventory_0001
"""

from alembic import op

revision = "inventory_0002"
down_revision = "inventory_0001"
branch_labels = None
depends_on = None

QTY = "numeric(14,3)"

# item code, description, unit, starting stock at LAB
REAGENTS = [
    ("RGT-CBC", "Haematology analyser reagent pack (complete blood count)", "test", 500),
    ("RGT-GLU", "Glucose reagent (hexokinase)", "test", 500),
    ("RGT-HBA1C", "HbA1c immunoassay reagent", "test", 200),
    ("RGT-CREA", "Creatinine reagent (enzymatic)", "test", 500),
    ("RGT-ISE", "Ion-selective electrode reagent (Na, K)", "test", 1000),
    ("RGT-CRP", "C-reactive protein reagent", "test", 300),
    ("RGT-TSH", "TSH immunoassay reagent", "test", 200),
    ("RGT-ALT", "ALT reagent", "test", 300),
    ("RGT-TROPI", "High-sensitivity troponin I reagent", "test", 100),
    ("RGT-PT", "Prothrombin time reagent", "test", 200),
    ("STRIP-UA", "Urinalysis dipstick", "strip", 300),
]

# lab test code, item code, quantity per test
REAGENT_USE = [
    ("HGB", "RGT-CBC", 1),
    ("WBC", "RGT-CBC", 1),
    ("GLU", "RGT-GLU", 1),
    ("HBA1C", "RGT-HBA1C", 1),
    ("CREA", "RGT-CREA", 1),
    ("K", "RGT-ISE", 1),
    ("NA", "RGT-ISE", 1),
    ("CRP", "RGT-CRP", 1),
    ("TSH", "RGT-TSH", 1),
    ("ALT", "RGT-ALT", 1),
    ("TROPI", "RGT-TROPI", 1),
    ("INR", "RGT-PT", 1),
    ("UA", "STRIP-UA", 1),
]


def upgrade() -> None:
    op.execute(
        """CREATE TABLE item (
            code text PRIMARY KEY CHECK (code ~ '^[A-Z0-9][A-Z0-9_-]{0,31}$'),
            description text NOT NULL CHECK (length(description) BETWEEN 1 AND 500),
            unit text NOT NULL CHECK (length(unit) BETWEEN 1 AND 16),
            chargeable boolean NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())"""
    )
    op.execute(
        f"""CREATE TABLE item_location (
            item_code text NOT NULL REFERENCES item (code),
            location text NOT NULL CHECK (location ~ '^[A-Z][A-Z0-9_-]{{0,31}}$'),
            threshold {QTY} CHECK (threshold >= 0),
            low boolean NOT NULL DEFAULT false,
            version bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (item_code, location))"""
    )
    op.execute(
        f"""CREATE TABLE stock_lot (
            id uuid PRIMARY KEY,
            item_code text NOT NULL,
            location text NOT NULL,
            lot text NOT NULL CHECK (length(lot) BETWEEN 1 AND 64),
            expires_on date,
            quantity {QTY} NOT NULL CHECK (quantity >= 0),
            received_seq bigint GENERATED ALWAYS AS IDENTITY,
            received_at timestamptz NOT NULL DEFAULT now(),
            FOREIGN KEY (item_code, location) REFERENCES item_location (item_code, location),
            UNIQUE NULLS NOT DISTINCT (item_code, location, lot, expires_on))"""
    )
    op.execute("CREATE INDEX stock_lot_expiring ON stock_lot (expires_on) WHERE quantity > 0")
    op.execute(
        f"""CREATE TABLE receipt (
            id uuid PRIMARY KEY,
            lot_id uuid NOT NULL REFERENCES stock_lot (id),
            quantity {QTY} NOT NULL CHECK (quantity > 0),
            received_by uuid NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now())"""
    )
    op.execute(
        f"""CREATE TABLE consumption (
            id uuid PRIMARY KEY,
            item_code text NOT NULL,
            location text NOT NULL,
            quantity {QTY} NOT NULL CHECK (quantity > 0),
            reason text NOT NULL CHECK (reason IN ('patient', 'other', 'lab_order')),
            patient_id uuid,
            source_id uuid,
            chargeable boolean NOT NULL,
            consumed_by uuid,
            consumed_at timestamptz NOT NULL DEFAULT now(),
            FOREIGN KEY (item_code, location) REFERENCES item_location (item_code, location),
            CHECK ((reason = 'patient') = (patient_id IS NOT NULL)),
            CHECK ((reason = 'lab_order') = (source_id IS NOT NULL)),
            UNIQUE (source_id, item_code))"""
    )
    op.execute(
        f"""CREATE TABLE consumption_lot (
            consumption_id uuid NOT NULL REFERENCES consumption (id),
            lot_id uuid NOT NULL REFERENCES stock_lot (id),
            quantity {QTY} NOT NULL CHECK (quantity > 0),
            PRIMARY KEY (consumption_id, lot_id))"""
    )
    op.execute(
        f"""CREATE TABLE backorder (
            id uuid PRIMARY KEY,
            item_code text NOT NULL REFERENCES item (code),
            location text NOT NULL,
            requested {QTY} NOT NULL CHECK (requested > 0),
            available {QTY} NOT NULL CHECK (available >= 0 AND available < requested),
            reason text NOT NULL CHECK (reason IN ('patient', 'other', 'lab_order')),
            patient_id uuid,
            source_id uuid,
            created_by uuid,
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK ((reason = 'patient') = (patient_id IS NOT NULL)),
            CHECK ((reason = 'lab_order') = (source_id IS NOT NULL)),
            UNIQUE (source_id, item_code))"""
    )
    op.execute("CREATE INDEX backorder_recent ON backorder (created_at DESC)")
    op.execute(
        f"""CREATE TABLE low_stock_alert (
            id uuid PRIMARY KEY,
            item_code text NOT NULL,
            location text NOT NULL,
            on_hand {QTY} NOT NULL,
            threshold {QTY} NOT NULL,
            alerted_at timestamptz NOT NULL DEFAULT now(),
            FOREIGN KEY (item_code, location) REFERENCES item_location (item_code, location))"""
    )
    op.execute("CREATE INDEX low_stock_alert_recent ON low_stock_alert (alerted_at DESC)")
    op.execute(
        f"""CREATE TABLE reagent_use (
            test_code text NOT NULL CHECK (test_code ~ '^[A-Z0-9]{{1,16}}$'),
            item_code text NOT NULL REFERENCES item (code),
            quantity {QTY} NOT NULL CHECK (quantity > 0),
            location text NOT NULL DEFAULT 'LAB',
            PRIMARY KEY (test_code, item_code))"""
    )
    _seed()


def _seed() -> None:
    items = ", ".join(f"('{code}', '{desc}', '{unit}', false)" for code, desc, unit, _ in REAGENTS)
    op.execute(f"INSERT INTO item (code, description, unit, chargeable) VALUES {items}")
    places = ", ".join(f"('{code}', 'LAB', {qty // 10})" for code, _, _, qty in REAGENTS)
    op.execute(f"INSERT INTO item_location (item_code, location, threshold) VALUES {places}")
    lots = ", ".join(
        f"(gen_random_uuid(), '{code}', 'LAB', 'SEED-{code}', CURRENT_DATE + 365, {qty})"
        for code, _, _, qty in REAGENTS
    )
    op.execute(f"INSERT INTO stock_lot (id, item_code, location, lot, expires_on, quantity) VALUES {lots}")
    uses = ", ".join(f"('{test}', '{item}', {qty})" for test, item, qty in REAGENT_USE)
    op.execute(f"INSERT INTO reagent_use (test_code, item_code, quantity) VALUES {uses}")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")

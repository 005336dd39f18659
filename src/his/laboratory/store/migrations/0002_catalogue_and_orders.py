"""laboratory: the test catalogue (seeded, prices in TRY), orders, their tests and results, and
the patients known from events (which account owns which patient).

A result row is unique per (order, test); an order's status is one of its state machine's.

Revision ID: laboratory_0002
Revises: laboratory_0001
"""

from alembic import op

revision = "laboratory_0002"
down_revision = "laboratory_0001"
branch_labels = None
depends_on = None

# code, label, specimen, unit, reference low/high, critical low/high, price (TRY)
SEED = [
    ("HGB", "Hemoglobin (complete blood count)", "blood", "g/dL", "12.0", "17.5", "7.0", "20.0", "150.00"),
    ("WBC", "White blood cell count", "blood", "10^9/L", "4.0", "11.0", "2.0", "30.0", "90.00"),
    ("GLU", "Glucose, fasting", "serum", "mg/dL", "70", "99", "40", "500", "60.00"),
    ("HBA1C", "Hemoglobin A1c", "blood", "%", "4.0", "5.6", None, None, "220.00"),
    ("CREA", "Creatinine", "serum", "mg/dL", "0.60", "1.30", None, "10.00", "70.00"),
    ("K", "Potassium", "serum", "mmol/L", "3.5", "5.1", "2.5", "6.5", "65.00"),
    ("NA", "Sodium", "serum", "mmol/L", "136", "145", "120", "160", "65.00"),
    ("CRP", "C-reactive protein", "serum", "mg/L", "0", "5", None, None, "120.00"),
    ("TSH", "Thyroid-stimulating hormone", "serum", "mIU/L", "0.40", "4.00", None, None, "180.00"),
    ("ALT", "Alanine aminotransferase", "serum", "U/L", "7", "56", None, "1000", "75.00"),
    ("TROPI", "Troponin I, high-sensitivity", "plasma", "ng/L", "0", "26", None, "100", "350.00"),
    ("INR", "Prothrombin time, INR", "plasma", "INR", "0.8", "1.2", None, "5.0", "90.00"),
    ("UA", "Urinalysis, dipstick", "urine", None, None, None, None, None, "80.00"),
]


def _lit(v: str | None) -> str:
    return "NULL" if v is None else "'" + v.replace("'", "''") + "'"


def upgrade() -> None:
    op.execute(
        """CREATE TABLE lab_test (
            code text PRIMARY KEY CHECK (code ~ '^[A-Z0-9]{1,16}$'),
            label text NOT NULL,
            specimen text NOT NULL CHECK (specimen IN ('blood', 'serum', 'plasma', 'urine')),
            unit text,
            reference_low numeric,
            reference_high numeric,
            critical_low numeric,
            critical_high numeric,
            price numeric(12,2) NOT NULL CHECK (price >= 0),
            currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            active boolean NOT NULL DEFAULT true,
            CHECK (reference_low IS NULL OR reference_high IS NULL OR reference_low <= reference_high),
            CHECK (critical_low IS NULL OR reference_low IS NULL OR critical_low <= reference_low),
            CHECK (critical_high IS NULL OR reference_high IS NULL OR reference_high <= critical_high))"""
    )
    rows = ",\n".join(f"({', '.join(_lit(v) for v in row)}, 'TRY')" for row in SEED)
    op.execute(
        "INSERT INTO lab_test (code, label, specimen, unit, reference_low, reference_high, critical_low, "
        f"critical_high, price, currency) VALUES {rows}"
    )
    op.execute(
        """CREATE TABLE lab_order (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL,
            ordered_by uuid NOT NULL,
            priority text NOT NULL CHECK (priority IN ('routine', 'urgent', 'stat')),
            status text NOT NULL CHECK (status IN ('placed', 'collected', 'in_progress', 'resulted', 'cancelled')),
            version integer NOT NULL DEFAULT 1,
            placed_at timestamptz NOT NULL DEFAULT now(),
            collected_at timestamptz,
            collected_by uuid,
            started_at timestamptz,
            started_by uuid,
            resulted_at timestamptz,
            resulted_by uuid,
            cancelled_at timestamptz,
            cancelled_by uuid,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CHECK ((status = 'resulted') = (resulted_at IS NOT NULL)),
            CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)))"""
    )
    op.execute("CREATE INDEX lab_order_by_patient ON lab_order (patient_id, placed_at DESC)")
    op.execute("CREATE INDEX lab_order_by_status ON lab_order (status, placed_at)")
    op.execute(
        """CREATE TABLE lab_order_test (
            order_id uuid NOT NULL REFERENCES lab_order (id),
            code text NOT NULL REFERENCES lab_test (code),
            position smallint NOT NULL,
            PRIMARY KEY (order_id, code))"""
    )
    op.execute(
        """CREATE TABLE lab_result (
            order_id uuid NOT NULL,
            code text NOT NULL,
            value text NOT NULL CHECK (length(value) BETWEEN 1 AND 64),
            unit text,
            reference_low numeric,
            reference_high numeric,
            flag text NOT NULL CHECK (flag IN ('N', 'L', 'H', 'LL', 'HH', 'A')),
            price numeric(12,2) NOT NULL,
            currency text NOT NULL,
            resulted_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (order_id, code),
            FOREIGN KEY (order_id, code) REFERENCES lab_order_test (order_id, code))"""
    )
    op.execute(
        """CREATE TABLE known_patient (
            patient_id uuid PRIMARY KEY,
            account_id uuid UNIQUE,
            learned_at timestamptz NOT NULL DEFAULT now())"""
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")

"""billing: price list versions, payer plans as data, coverage history, encounters, charges,
invoices with their priced lines, yearly accumulators, claims, payments and idempotency keys.

Seeds the first price list (effective 2020-01-01, TRY) and the plans SGK, ALLIANZ, SELF and
NOVA. Money is NUMERIC(12,2) with a currency; a charge is unique per source (an event redelivered
or replayed never charges twice); an encounter has at most one draft invoice; a payment's
idempotency key is unique per caller, so concurrent identical requests make one payment.

Revision ID: billing_0002
Revises: billing_0001
"""

from alembic import op

revision = "billing_0002"
down_revision = "billing_0001"
branch_labels = None
depends_on = None

CATEGORY = "IN ('consultation', 'procedure', 'bed', 'laboratory', 'supplies')"
MONEY = "numeric(12,2)"

TABLES = [
    f"""CREATE TABLE payer_plan (
        code text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9_]{{1,31}}$'),
        title text NOT NULL,
        copay {MONEY} NOT NULL DEFAULT 0 CHECK (copay >= 0),
        deductible {MONEY} NOT NULL DEFAULT 0 CHECK (deductible >= 0),
        out_of_pocket_cap {MONEY} CHECK (out_of_pocket_cap >= 0),
        currency text NOT NULL DEFAULT 'TRY' CHECK (currency ~ '^[A-Z]{{3}}$'))""",
    f"""CREATE TABLE plan_coverage (
        plan_code text NOT NULL REFERENCES payer_plan (code),
        category text NOT NULL CHECK (category {CATEGORY}),
        percentage numeric(5,2) NOT NULL CHECK (percentage BETWEEN 0 AND 100),
        PRIMARY KEY (plan_code, category))""",
    """CREATE TABLE plan_exclusion (
        plan_code text NOT NULL REFERENCES payer_plan (code),
        kind text NOT NULL CHECK (kind IN ('category', 'code')),
        value text NOT NULL,
        PRIMARY KEY (plan_code, kind, value))""",
    """CREATE TABLE price_list_version (
        id uuid PRIMARY KEY,
        effective_from date NOT NULL UNIQUE,
        created_by uuid,
        created_at timestamptz NOT NULL DEFAULT now())""",
    f"""CREATE TABLE price_line (
        version_id uuid NOT NULL REFERENCES price_list_version (id),
        code text NOT NULL CHECK (length(code) BETWEEN 1 AND 80),
        category text NOT NULL CHECK (category {CATEGORY}),
        amount {MONEY} NOT NULL CHECK (amount >= 0),
        currency text NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
        PRIMARY KEY (version_id, code))""",
    """CREATE TABLE known_patient (
        patient_id uuid PRIMARY KEY,
        account_id uuid,
        learned_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX known_patient_by_account ON known_patient (account_id)",
    """CREATE TABLE coverage (
        id bigserial PRIMARY KEY,
        patient_id uuid NOT NULL,
        payer text,
        effective_from date NOT NULL,
        event_id uuid NOT NULL UNIQUE,
        recorded_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX coverage_by_patient ON coverage (patient_id, effective_from DESC, id DESC)",
    """CREATE TABLE encounter (
        id uuid PRIMARY KEY,
        patient_id uuid NOT NULL,
        kind text NOT NULL CHECK (kind IN ('admission', 'appointment', 'lab_order', 'supplies')),
        source_id uuid NOT NULL,
        started_at timestamptz NOT NULL,
        ended_at timestamptz,
        -- For an admission: the bed nights its discharge says were posted; it closes when all arrived.
        expected_nights integer CHECK (expected_nights >= 0),
        status text NOT NULL CHECK (status IN ('open', 'closed')),
        UNIQUE (kind, source_id))""",
    "CREATE INDEX admission_by_patient ON encounter (patient_id, started_at) WHERE kind = 'admission'",
    f"""CREATE TABLE invoice (
        id uuid PRIMARY KEY,
        patient_id uuid NOT NULL,
        encounter_id uuid NOT NULL REFERENCES encounter (id),
        kind text NOT NULL CHECK (kind IN ('visit', 'admission', 'supplementary')),
        replaces uuid REFERENCES invoice (id),
        status text NOT NULL CHECK (status IN ('draft', 'open', 'partially_paid', 'paid', 'void')),
        currency text NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
        service_date date NOT NULL,
        payer text,
        plan_year integer,
        total {MONEY},
        insurer_share {MONEY} CHECK (insurer_share >= 0),
        patient_share {MONEY} CHECK (patient_share >= 0),
        paid {MONEY} NOT NULL DEFAULT 0 CHECK (paid >= 0),
        deductible_applied {MONEY} NOT NULL DEFAULT 0,
        out_of_pocket_applied {MONEY} NOT NULL DEFAULT 0,
        issued_at timestamptz,
        voided_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CHECK (total = insurer_share + patient_share),
        CHECK ((issued_at IS NULL) = (status = 'draft') OR status = 'void'),
        CHECK (status IN ('draft', 'void') OR (payer IS NOT NULL AND total IS NOT NULL)))""",
    "CREATE UNIQUE INDEX invoice_one_draft_per_encounter ON invoice (encounter_id) WHERE status = 'draft'",
    "CREATE INDEX invoice_by_patient ON invoice (patient_id, created_at DESC)",
    f"""CREATE TABLE charge (
        id uuid PRIMARY KEY,
        patient_id uuid NOT NULL,
        source_kind text NOT NULL CHECK (source_kind IN ('appointment', 'bed_charge', 'lab_order', 'stock')),
        source_id uuid NOT NULL,
        line_key text NOT NULL,
        code text NOT NULL,
        category text NOT NULL CHECK (category {CATEGORY}),
        quantity numeric(14,4) NOT NULL CHECK (quantity > 0),
        unit_price {MONEY} NOT NULL CHECK (unit_price >= 0),
        amount {MONEY} NOT NULL CHECK (amount >= 0),
        currency text NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
        service_at timestamptz NOT NULL,
        service_date date NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'void')),
        encounter_id uuid REFERENCES encounter (id),
        invoice_id uuid REFERENCES invoice (id),
        created_at timestamptz NOT NULL DEFAULT now(),
        voided_at timestamptz,
        UNIQUE (source_kind, source_id, line_key))""",
    "CREATE INDEX charge_by_patient ON charge (patient_id, service_at DESC)",
    "CREATE INDEX charge_by_invoice ON charge (invoice_id)",
    """CREATE TABLE voided_source (
        source_kind text NOT NULL,
        source_id uuid NOT NULL,
        voided_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (source_kind, source_id))""",
    f"""CREATE TABLE invoice_line (
        invoice_id uuid NOT NULL REFERENCES invoice (id),
        position integer NOT NULL,
        charge_id uuid NOT NULL REFERENCES charge (id),
        code text NOT NULL,
        category text NOT NULL,
        quantity numeric(14,4) NOT NULL,
        unit_price {MONEY} NOT NULL,
        total {MONEY} NOT NULL,
        insurer_share {MONEY} NOT NULL CHECK (insurer_share >= 0),
        patient_share {MONEY} NOT NULL CHECK (patient_share >= 0),
        excluded boolean NOT NULL,
        deductible {MONEY} NOT NULL,
        copay {MONEY} NOT NULL,
        PRIMARY KEY (invoice_id, position),
        CHECK (insurer_share + patient_share = total))""",
    f"""CREATE TABLE accumulator (
        patient_id uuid NOT NULL,
        payer text NOT NULL,
        year integer NOT NULL,
        deductible_used {MONEY} NOT NULL DEFAULT 0 CHECK (deductible_used >= 0),
        out_of_pocket {MONEY} NOT NULL DEFAULT 0 CHECK (out_of_pocket >= 0),
        PRIMARY KEY (patient_id, payer, year))""",
    f"""CREATE TABLE claim (
        id uuid PRIMARY KEY,
        invoice_id uuid NOT NULL UNIQUE REFERENCES invoice (id),
        patient_id uuid NOT NULL,
        payer text NOT NULL,
        amount {MONEY} NOT NULL CHECK (amount > 0),
        currency text NOT NULL,
        status text NOT NULL CHECK (status IN ('draft', 'submitted', 'accepted', 'rejected', 'paid', 'void')),
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX claim_by_status ON claim (status, created_at)",
    f"""CREATE TABLE payment (
        id uuid PRIMARY KEY,
        invoice_id uuid NOT NULL REFERENCES invoice (id),
        patient_id uuid NOT NULL,
        kind text NOT NULL CHECK (kind IN ('payment', 'refund')),
        amount {MONEY} NOT NULL CHECK (amount > 0),
        currency text NOT NULL,
        method text NOT NULL CHECK (method IN ('cash', 'card', 'bank_transfer', 'online')),
        created_by uuid NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX payment_by_invoice ON payment (invoice_id, created_at)",
    """CREATE TABLE idempotency_key (
        actor uuid NOT NULL,
        key text NOT NULL,
        request_hash text NOT NULL,
        response_status integer NOT NULL,
        response_body text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (actor, key))""",
]

_ALL = ("consultation", "procedure", "bed", "laboratory", "supplies")
PLANS = [
    # code, title, copay, deductible, cap, percentage of every category, excluded categories
    ("SGK", "Social Security Institution", "0", "0", None, "80", ()),
    ("ALLIANZ", "Allianz private health", "0", "0", None, "100", ()),
    ("SELF", "Self-pay", "0", "0", None, "0", ()),
    ("NOVA", "Nova Health (deductible, co-pay, cap)", "100.00", "1000.00", "5000.00", "90", ("supplies",)),
]
FIRST_VERSION = "00000000-0000-4000-8000-00000000b111"
PRICES = [
    ("consultation.consultation", "consultation", "750.00"),
    ("consultation.follow_up", "consultation", "400.00"),
    ("consultation.checkup", "consultation", "900.00"),
    ("consultation.vaccination", "procedure", "250.00"),
    ("consultation.procedure", "procedure", "2000.00"),
    ("item.SYRINGE-5ML", "supplies", "12.75"),
    ("item.IV-SET", "supplies", "85.00"),
    ("item.GAUZE", "supplies", "8.40"),
    ("item.CATHETER", "supplies", "150.00"),
]


def upgrade() -> None:
    for stmt in TABLES:
        op.execute(stmt)
    for code, title, copay, deductible, cap, pct, excluded in PLANS:
        op.execute(
            "INSERT INTO payer_plan (code, title, copay, deductible, out_of_pocket_cap) "
            f"VALUES ('{code}', '{title}', {copay}, {deductible}, {cap or 'NULL'})"
        )
        for cat in _ALL:
            op.execute(f"INSERT INTO plan_coverage VALUES ('{code}', '{cat}', {pct})")
        for cat in excluded:
            op.execute(f"INSERT INTO plan_exclusion VALUES ('{code}', 'category', '{cat}')")
    op.execute(f"INSERT INTO price_list_version (id, effective_from) VALUES ('{FIRST_VERSION}', '2020-01-01')")
    for code, category, amount in PRICES:
        op.execute(f"INSERT INTO price_line VALUES ('{FIRST_VERSION}', '{code}', '{category}', {amount}, 'TRY')")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")

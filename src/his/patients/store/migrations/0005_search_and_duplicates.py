"""patients: search tolerant of accents and typos, and look-ups for likely duplicates.

``fold`` maps a name to lower case without diacritics (Turkish letters included: ı→i, ş→s…),
so "Yılmaz", "YILMAZ" and "Yilmaz" are the same; trigram similarity (pg_trgm) then tolerates
typos ("Yilmas").

Revision ID: patients_0005
Revises: patients_0004
"""

from alembic import op

revision = "patients_0005"
down_revision = "patients_0004"
branch_labels = None
depends_on = None

FROM = "ıİIşŞğĞçÇöÖüÜâÂîÎûÛáÁàÀäÄãÃåÅéÉèÈêÊëËíÍìÌïÏóÓòÒôÔõÕøØúÚùÙñÑýÝ"
TO = "iiisSgGcCoOuUaAiIuUaAaAaAaAaAeEeEeEeEiIiIiIoOoOoOoOoOuUuUnNyY"


def upgrade() -> None:
    assert len(FROM) == len(TO)
    op.execute(
        f"""CREATE FUNCTION fold(t text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN lower(translate(t, '{FROM}', '{TO}'))"""
    )
    op.execute(
        "CREATE FUNCTION full_name(g text, f text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
        "RETURN fold(g || ' ' || f)"
    )
    op.execute(
        "CREATE INDEX patient_name_trgm ON patient USING gin (full_name(given_name, family_name) public.gin_trgm_ops)"
    )
    op.execute("CREATE INDEX patient_birth_date ON patient (birth_date)")
    op.execute("CREATE INDEX patient_email ON patient (lower(email)) WHERE email IS NOT NULL")
    op.execute(
        "CREATE INDEX patient_phone_digits ON patient (regexp_replace(phone, '[^0-9]', '', 'g')) WHERE phone IS NOT NULL"
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")

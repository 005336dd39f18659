"""billing: price list, payer plans, charges, invoices, claims, payments."""

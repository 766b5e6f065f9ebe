"""The audit trail in PostgreSQL."""

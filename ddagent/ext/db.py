"""Database tags."""

NAME = "db.name"
USER = "db.user"
SYSTEM = "db.system"
ROWCOUNT = "db.row_count"  # a metric

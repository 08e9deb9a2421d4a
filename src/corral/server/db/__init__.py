"""The database: tables, engine and migrations. Only services touch it."""

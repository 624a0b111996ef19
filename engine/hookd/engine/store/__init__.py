"""SQLite storage: schema and migrations, one batching writer, and read queries."""

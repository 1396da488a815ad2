"""Real servers for tests and for `steward dev`: control plane, Rucio, PostgreSQL."""

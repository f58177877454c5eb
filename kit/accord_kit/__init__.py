"""The Accord shared kit: what every service is built from (and nothing service-specific)."""

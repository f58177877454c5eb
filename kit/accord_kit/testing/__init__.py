"""Test support shipped with the kit: pytest fixtures and a small test aggregate."""

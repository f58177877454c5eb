"""Accord billing service."""

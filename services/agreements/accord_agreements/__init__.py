"""Accord agreements service."""

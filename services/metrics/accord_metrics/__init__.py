"""Accord metrics service."""

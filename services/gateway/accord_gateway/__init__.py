"""Accord gateway: current status for every client (read model, gRPC, HTTP/JSON)."""

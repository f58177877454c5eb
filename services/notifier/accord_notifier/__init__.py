"""The notifier service: delivers agreement events to webhooks and Alertmanager."""

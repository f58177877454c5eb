"""`accord`: the command line of departments and auditors."""

__version__ = "0.1.0"  # as pyproject.toml

"""The package version (one place; written into every file featdiff saves)."""

__version__ = "0.1.0"

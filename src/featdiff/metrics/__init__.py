"""Per-feature and summary metrics of aligned dictionaries."""

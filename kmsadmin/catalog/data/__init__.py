"""Package data of the catalog: TOML tables transcribed from Microsoft's documentation."""

"""Search spaces shipped with the tool, one TOML file per task."""

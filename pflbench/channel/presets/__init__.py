"""Channel preset cards (YAML)."""

"""Your own model in a config: see README.md in this folder."""

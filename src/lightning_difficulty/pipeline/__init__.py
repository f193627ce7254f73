"""The fit-end pipeline the report owns: capture pass -> measures -> derived columns -> summary -> files -> views."""

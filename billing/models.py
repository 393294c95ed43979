"""Placeholder room: models arrive with their issue (see ARCHITECTURE.md)."""

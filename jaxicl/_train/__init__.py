"""Training: objectives, the state a run carries, and the one trainer (a lax.scan over steps)."""

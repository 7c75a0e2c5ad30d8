"""In-context regression prompts and the distributions they are drawn from."""

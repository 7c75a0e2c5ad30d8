"""The study interface, the one runner, its plan, store, sweep files and figures."""

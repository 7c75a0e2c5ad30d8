"""Host-side helpers: run directories and checkpoints, devices, progress bars, figure helpers."""

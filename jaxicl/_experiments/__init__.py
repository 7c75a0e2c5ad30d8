"""Named, reproducible experiments: configuration in, results directory (data + figures) out."""

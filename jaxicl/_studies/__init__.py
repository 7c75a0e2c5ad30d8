"""The built-in studies that sweep files and the command line name."""

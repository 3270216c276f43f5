"""exportpipe."""

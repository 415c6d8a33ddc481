"""rdinet: see README.md."""

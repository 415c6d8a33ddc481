"""dygraph: see README.md."""

"""adanet: see README.md."""

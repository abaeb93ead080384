"""Training systems: `anakin` (the fully-jitted act-and-learn loop for JAX environments)."""

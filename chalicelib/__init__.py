"""skymesh control plane: pure domain, use cases, adapters and the REST API."""

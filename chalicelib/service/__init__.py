"""Use cases: the only callers of the ports."""

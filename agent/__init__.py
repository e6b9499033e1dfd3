"""skymesh host agent: joins a host, applies WireGuard, keeps it converged."""

__version__ = "0.1.0"

"""Pure core: no I/O, no clock, no environment. Time, ids and randomness come in as arguments."""

"""skymesh command-line tools: the admin CLI and the local stack (``skymesh local up``)."""

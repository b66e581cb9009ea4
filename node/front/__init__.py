"""A node of several processes: a front that admits and forwards, and its worker processes."""

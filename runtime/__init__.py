"""The runtime: runners for every backend, the wire protocol, and the device and edge roles."""

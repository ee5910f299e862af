"""wattlens collector: per-node agent that turns sensor readings into points and ships them to sinks."""

"""wattlens analytics: the read side. Queries (one module talks to the store) and pure functions over their results."""

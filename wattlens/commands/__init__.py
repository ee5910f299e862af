"""One module per CLI command group; each exposes ``register(subparsers)`` and imports its layer lazily."""

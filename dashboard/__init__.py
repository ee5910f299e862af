"""wattlens dashboard: the Dash app. Figure builders are pure functions; callbacks are thin adapters."""

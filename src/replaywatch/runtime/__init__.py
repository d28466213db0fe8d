"""The wiring: adapters opened from the settings, and the one retry policy."""

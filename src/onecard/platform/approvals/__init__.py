"""Four-eyes approval: actions that need a second operator wait here until decided."""

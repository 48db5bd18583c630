"""Cards and their life cycle; every change of acceptance versions the card blacklist."""

"""Double-entry ledger in integer fen: accounts, immutable entries and lines, cached balances."""

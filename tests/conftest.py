"""Shared test configuration; fixtures come from the ``onecard.testing.fixtures`` plugin."""

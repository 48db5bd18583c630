"""The "X" of 1+X: business modules, each found through an ``onecard.modules`` entry point."""

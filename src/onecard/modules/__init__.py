"""The "X" of 1+X: business modules, each a package found through ``onecard.modules`` entry points."""

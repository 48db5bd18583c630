"""Reader drivers: PC/SC through pyscard, and the vpcd transport that puts an emulator into a
virtual reader of pcscd (toolchain.md §1)."""

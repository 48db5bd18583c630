"""Terminal-side purse flows over a `CardChannel`: load, purchase, CAPP purchase, tear recovery
and the clearing record (epurse.md §7, §12). The same code drives an in-process emulator or a
real reader through PC/SC."""

"""The "1" of 1+X: tenants, people, cards, ledger, operators, audit, devices, plugin host.

The platform imports neither ``onecard.web`` nor ``onecard.modules``; modules extend it only
through the hooks declared in :mod:`onecard.platform.hookspecs`.
"""

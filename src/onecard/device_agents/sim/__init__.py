"""Simulator fleet: many virtual terminals in one process on one network loop, with injected
faults (offline windows, clock skew and resets, duplicated and reordered uploads, power loss,
store wipes) and counters that let a test prove nothing was lost or duplicated."""

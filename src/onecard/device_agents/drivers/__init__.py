"""Reader drivers: where credentials come from and where decisions are shown.

`base.ReaderDriver` is the interface; `sim.SimulatedReader` (tests, simulator),
`wedge.LineReader` (keyboard-wedge card readers and QR scanners: one credential per line) and
`pcsc.PcscReader` (a PC/SC reader, UID by ``FF CA 00 00 00``) implement it.
"""

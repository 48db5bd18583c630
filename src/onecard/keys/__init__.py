"""Key service: card cryptography, HSM interface and backends, key ceremonies, card layouts.

Only this package touches key material. Other packages call `onecard.keys.service.KeyService`
and get MACs, verdicts or wrapped blobs back, never a clear master key. The pure primitives in
`onecard.keys.algorithms` are for card/PSAM emulators, which hold card-level keys by design.
"""

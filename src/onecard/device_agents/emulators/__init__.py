"""Card-side emulators: PBOC-style CPU purse card (MOHURD, MOT, campus; 3DES and SM4), PSAM and
MIFARE Classic, with persisted images and simulated power loss (epurse.md §4–§14)."""

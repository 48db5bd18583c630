"""Device side: the pure MQTT protocol, agent runtime, reader drivers and card/PSAM emulators.

Nothing here imports ``onecard.platform``, ``onecard.web`` or ``onecard.modules``: agents are
separate processes that speak only MQTT (and, for emulated cards, APDUs).
"""

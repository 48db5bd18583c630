"""The device protocol, pure: no sockets/clock. Messages, codes and byte layouts that agents,
terminals and the platform share (MQTT payloads, the §12 clearing record, card files).

This is the one part of ``onecard.device_agents`` the platform may import (ARCHITECTURE §2).
"""

"""The clearing record a terminal uploads (epurse.md §12), re-exported from the pure protocol
package where its byte layout lives (`onecard.device_agents.protocol.clearing`)."""

from onecard.device_agents.protocol.clearing import (
    FORMAT_VERSION,
    MAC2_NOT_VERIFIED,
    MAC2_RECOVERED,
    MAC2_VERIFIED,
    RECORD_LEN,
    ClearingRecord,
)

__all__ = [
    "FORMAT_VERSION",
    "MAC2_NOT_VERIFIED",
    "MAC2_RECOVERED",
    "MAC2_VERIFIED",
    "RECORD_LEN",
    "ClearingRecord",
]

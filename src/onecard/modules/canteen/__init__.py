"""Canteen (食堂): meal sales at POS terminals, charged to the holder's purses."""

from onecard.platform.manifest import ModuleManifest

MODULE = ModuleManifest(
    key="canteen",
    name="Canteen",
    version="1.0",
    package="onecard.modules.canteen",
    description="Merchants and POS terminals, meal periods, limits, discounts, offline sales, "
    "daily settlement",
    device_kinds=("pos",),
    default_settings={"pin_threshold_fen": None},
)

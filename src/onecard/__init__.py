"""OneCard (一卡通): one card per person, accepted everywhere on a campus, park or bus line."""

__version__ = "0.1.0"

"""Money in integer fen (分). ``Decimal`` appears only where text is parsed or printed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from onecard.platform.errors import ValidationFailed

MAX_FEN = 10**15  # far above any purse; keeps amounts inside BIGINT with room for sums


@dataclass(frozen=True, order=True)
class Money:
    """An amount of one currency in its minor unit. Arithmetic refuses to mix currencies."""

    fen: int
    currency: str = "CNY"

    def __post_init__(self) -> None:
        if isinstance(self.fen, bool) or not isinstance(self.fen, int):
            raise TypeError("Money.fen must be an int (fen), never a float")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.fen + other.fen, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.fen - other.fen, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.fen, self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency} and {other.currency}")

    @classmethod
    def parse(cls, text: str, currency: str = "CNY") -> Money:
        """Parse ``"12.50"`` as 1250 fen; more than two decimals is an error, not a rounding."""
        try:
            value = Decimal(text.strip())
        except (InvalidOperation, AttributeError):
            raise ValidationFailed(f"{text!r} is not an amount") from None
        fen = value * 100
        if not value.is_finite() or fen != fen.to_integral_value():
            raise ValidationFailed(f"{text!r} has more than two decimal places")
        return cls(int(fen), currency)

    def format(self) -> str:
        """Return ``"12.50"`` style text (sign first for negatives)."""
        sign = "-" if self.fen < 0 else ""
        whole, cents = divmod(abs(self.fen), 100)
        return f"{sign}{whole}.{cents:02d}"


def require_positive_fen(amount: int, *, field: str = "amount_fen") -> int:
    """Return ``amount`` if it is a positive whole number of fen within range, else raise."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValidationFailed(f"{field} must be a whole number of fen", field=field)
    if not 0 < amount <= MAX_FEN:
        raise ValidationFailed(f"{field} must be between 1 and {MAX_FEN}", field=field)
    return amount

"""Domain errors. Each carries a locale key so the bot can answer the customer in plain words."""

from __future__ import annotations


class DomainError(Exception):
    key = "error.generic"

    def __init__(self, key: str | None = None, **values: object) -> None:
        self.key = key or self.key
        self.values = values
        super().__init__(f"{self.key} {values}" if values else self.key)


class NotFound(DomainError):
    key = "error.not_found"


class OutOfStock(DomainError):
    key = "error.out_of_stock"


class IllegalTransition(DomainError):
    key = "error.illegal_transition"


class InvalidInput(DomainError):
    key = "error.invalid_input"

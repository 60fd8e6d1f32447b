"""Page numbers for server-rendered lists."""

from __future__ import annotations

from dataclasses import dataclass

from flask import request


@dataclass
class PageArgs:
    number: int
    per_page: int
    total: int = 0

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.per_page

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def page_args(per_page: int = 50) -> PageArgs:
    try:
        number = max(1, min(int(request.args.get("page", 1)), 100000))
    except ValueError:
        number = 1
    return PageArgs(number=number, per_page=per_page)

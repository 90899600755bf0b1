"""Product search over the name, description and SKU of active products.

PostgreSQL: full-text search on `to_tsvector('simple', name || ' ' || description || ' ' || sku)`
(a stored generated column with a GIN index, migration 0004_search), every word of the query required and the last one
matched as a prefix (the customer may still be typing it), and typo tolerance from pg_trgm: a word
of four letters or more also matches a product whose name has a similar word (`word <% name`, the
trigram GIN index on name, pg_trgm's default word-similarity threshold of 0.6), so "lenvo" finds
Lenovo. Each word's two alternatives are indexable, so the whole condition is a bitmap AND of
bitmap ORs of index scans. At most CANDIDATES matches are ranked — products whose name holds every
word first, then by trigram word similarity of the whole query to the name, those in stock first —
so a one-word query matching half the catalogue costs what a precise one does.

SQLite (development, tests): every word must appear, case-insensitively, in the name, the
description or the SKU (LIKE, with `%`, `_` and the escape character itself escaped).

User input is cut to MAX_QUERY_CHARS characters and MAX_WORDS words; blank input is no query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, false, func, literal, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Product
from db.session import dialect_name

MAX_QUERY_CHARS = 100
MAX_WORDS = 6
MAX_RESULTS = 8
CANDIDATES = 200  # matches ranked on PostgreSQL; the rest of a vague query's matches are not looked at
TYPO_MIN_CHARS = 4  # shorter words ("gb", "16", "ssd") only match as typed: a trigram of them says little
# pg_trgm's word similarity from which a word counts as a typo of a word in the name (its default,
# 0.6, misses "lenvo" for Lenovo at 0.5 and "samsng" for Samsung at 0.57).
WORD_SIMILARITY = 0.45
PREFIX_MIN_CHARS = 2  # the last word as a prefix from two characters ("la" → laptop); one matches as typed

# PostgreSQL's generated column `to_tsvector('simple', name || ' ' || description || ' ' || sku)` with its
# GIN index (migration 0004_search); not mapped by the models, which describe both backends.
SEARCH_DOCUMENT = "products.search_document"

# A word for the full-text query: letters and digits, or a decimal number as PostgreSQL's parser reads
# one ("3.0", "2,5"). Nothing else reaches to_tsquery, so no input can be read as its operators.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+")
_LIKE_ESCAPE = "\\"


@dataclass(frozen=True, slots=True)
class Query:
    """What the customer typed, normalised: `text` (one space between words, at most MAX_QUERY_CHARS)
    and its `words` (at most MAX_WORDS, each as typed)."""

    text: str
    words: tuple[str, ...]


def parse_query(raw: str | None) -> Query | None:
    """The query in `raw`, or None when there is nothing to look for."""
    words = (raw or "")[: MAX_QUERY_CHARS * 4].split()  # bounded before splitting: a pasted novel costs nothing
    kept: list[str] = []
    length = 0
    for word in words[:MAX_WORDS]:
        room = MAX_QUERY_CHARS - length - (1 if kept else 0)
        if room <= 0:
            break
        kept.append(word[:room])
        length += len(kept[-1]) + (1 if len(kept) > 1 else 0)
    if not kept:
        return None
    return Query(" ".join(kept), tuple(kept))


async def search_products(session: AsyncSession, query: Query, limit: int = MAX_RESULTS) -> list[Product]:
    """Up to `limit` active products matching `query`, best first."""
    limit = max(1, min(limit, 50))
    if dialect_name(session) == "postgresql":
        stmt = postgresql_statement(query, limit)
        if stmt is not None:  # for this transaction only (in a statement-by-statement session: for none)
            await session.execute(
                select(func.set_config("pg_trgm.word_similarity_threshold", str(WORD_SIMILARITY), True))
            )
    else:
        stmt = _like(query, limit)
    if stmt is None:
        return []
    return list((await session.execute(stmt)).unique().scalars().all())


# --- PostgreSQL ------------------------------------------------------------------------------------


def _tokens(query: Query) -> list[str]:
    return [token.lower() for word in query.words for token in _TOKEN.findall(word)][: MAX_WORDS * 2]


def postgresql_statement(query: Query, limit: int) -> Select[Product] | None:
    """The PostgreSQL statement of a search (None when the query has no word to look for)."""
    tokens = _tokens(query)
    if not tokens:
        return None
    document: ColumnElement[Any] = literal_column(SEARCH_DOCUMENT)
    simple: ColumnElement[Any] = literal_column("'simple'")
    conditions: list[ColumnElement[bool]] = []
    terms: list[str] = []
    for n, token in enumerate(tokens):
        last = n == len(tokens) - 1
        term = f"{token}:*" if last and len(token) >= PREFIX_MIN_CHARS else token
        terms.append(term)
        word_matches: ColumnElement[bool] = document.op("@@")(func.to_tsquery(simple, literal(term)))
        if len(token) >= TYPO_MIN_CHARS and not token.isdigit():  # the cheaper test first: OR stops at a match
            word_matches = or_(literal(token).op("<%")(Product.name), word_matches)
        conditions.append(word_matches)
    candidates = (
        select(Product.id, Product.name, Product.stock)
        .where(Product.active.is_(True), and_(*conditions))
        .limit(CANDIDATES)
        .subquery()
    )
    every_word_in_name = func.to_tsvector(simple, candidates.c.name).op("@@")(
        func.to_tsquery(simple, literal(" & ".join(terms)))
    )
    return (
        select(Product)
        .join(candidates, candidates.c.id == Product.id)
        .order_by(
            case((every_word_in_name, 0), else_=1),
            func.word_similarity(literal(query.text.lower()), candidates.c.name).desc(),
            case((candidates.c.stock > 0, 0), else_=1),
            Product.id,
        )
        .limit(limit)
    )


# --- SQLite and anything else ---------------------------------------------------------------------


def like_pattern(word: str) -> str:
    """`%word%` with LIKE's wildcards in `word` taken literally."""
    escaped = (
        word.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", _LIKE_ESCAPE + "%").replace("_", _LIKE_ESCAPE + "_")
    )
    return f"%{escaped}%"


def _like(query: Query, limit: int) -> Select[Product] | None:
    conditions = []
    for word in query.words:
        pattern = like_pattern(word)
        conditions.append(
            or_(
                *(
                    column.ilike(pattern, escape=_LIKE_ESCAPE)
                    for column in (Product.name, Product.description, Product.sku)
                )
            )
        )
    if not conditions:
        return None
    name_has_first_word = Product.name.ilike(like_pattern(query.words[0]), escape=_LIKE_ESCAPE)
    return (
        select(Product)
        .where(Product.active.is_(True), and_(*conditions) if conditions else false())
        .order_by(case((name_has_first_word, 0), else_=1), Product.name, Product.id)
        .limit(limit)
    )

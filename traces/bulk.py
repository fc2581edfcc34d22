"""Fast inserts of many rows that may already be stored, for the workers' writes.

On PostgreSQL the rows go through `COPY`, several times faster than Django's bulk INSERT of the
same rows (which sends each column as an array, so that psycopg escapes every JSON document in
Python). `COPY` cannot skip a row that breaks a unique constraint: when one is already there (a
tracer resent a payload, or two workers raced on it), the savepoint is rolled back and the rows
are inserted the slower way, which skips those. Resends are rare, so most batches take the fast
path. Other databases (SQLite, the embedded default) always take the slower way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from django.db import IntegrityError, connection, models, transaction

logger = logging.getLogger(__name__)

INSERT_BATCH_SIZE = 1000


def json_text(value: Any) -> str:
    """A JSON document as COPY's text for a `jsonb` column: orjson where it can (about ten
    times faster); the standard library for what orjson refuses (integers past 64 bits, which
    a JSON body can carry, or non-string keys)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


class Columns:
    """The columns of a model that an insert writes, and how each value is adapted for COPY."""

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        self.fields = [field for field in model._meta.concrete_fields if not field.primary_key]
        self.names = [field.attname for field in self.fields]
        self._json = {field.attname for field in self.fields if isinstance(field, models.JSONField)}
        self._generated = [
            field
            for field in self.fields
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        ]

    def values(self, obj: models.Model) -> dict[str, Any]:
        for field in self._generated:
            field.pre_save(obj, add=True)
        return {name: getattr(obj, name) for name in self.names}

    def adapters(self) -> list[Callable[[Any], Any] | None]:
        return [json_text if name in self._json else None for name in self.names]


_columns: dict[type[models.Model], Columns] = {}


def columns_of(model: type[models.Model]) -> Columns:
    if model not in _columns:
        _columns[model] = Columns(model)
    return _columns[model]


def insert_new(*tables: tuple[type[models.Model], Sequence[dict[str, Any]]]) -> None:
    """Insert rows into one table or several, skipping any that a unique constraint says are
    stored already. Each row is a value for every column, by attribute name (`service_id`)."""
    tables = tuple((model, rows) for model, rows in tables if rows)
    if not tables:
        return
    if connection.vendor == "postgresql":
        try:
            with transaction.atomic(), connection.wrap_database_errors:
                for model, rows in tables:
                    _copy(columns_of(model), rows)
            return
        except IntegrityError:
            logger.info("some rows of %s are stored already", [m.__name__ for m, _ in tables])
    for model, rows in tables:
        model._default_manager.bulk_create(
            [model(**row) for row in rows], ignore_conflicts=True, batch_size=INSERT_BATCH_SIZE
        )


def rows_of(model: type[models.Model], objects: Iterable[models.Model]) -> list[dict[str, Any]]:
    """Model instances as the rows `insert_new` takes."""
    columns = columns_of(model)
    return [columns.values(obj) for obj in objects]


def _copy(columns: Columns, rows: Sequence[dict[str, Any]]) -> None:
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(columns.model._meta.db_table),
        sql.SQL(", ").join(sql.Identifier(str(field.column)) for field in columns.fields),
    )
    adapters = list(zip(columns.names, columns.adapters(), strict=True))
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([adapt(row[name]) if adapt else row[name] for name, adapt in adapters])

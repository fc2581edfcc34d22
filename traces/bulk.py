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
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
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

    def copy_values(self, row: dict[str, Any]) -> list[Any]:
        """A row's values in column order, JSON documents as text."""
        return [json_text(row[name]) if name in self._json else row[name] for name in self.names]


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
        _insert_skipping_stored(model, rows)


def _insert_skipping_stored(model: type[models.Model], rows: Sequence[dict[str, Any]]) -> None:
    model._default_manager.bulk_create(
        [model(**row) for row in rows], ignore_conflicts=True, batch_size=INSERT_BATCH_SIZE
    )


def rows_of(model: type[models.Model], objects: Iterable[models.Model]) -> list[dict[str, Any]]:
    """Model instances as the rows `insert_new` takes."""
    columns = columns_of(model)
    return [columns.values(obj) for obj in objects]


def _copy_statement(columns: Columns) -> Any:
    from psycopg import sql

    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(columns.model._meta.db_table),
        sql.SQL(", ").join(sql.Identifier(str(field.column)) for field in columns.fields),
    )


def _copy(columns: Columns, rows: Sequence[dict[str, Any]]) -> None:
    with connection.cursor() as cursor, cursor.cursor.copy(_copy_statement(columns)) as copy:
        for row in map(columns.copy_values, rows):
            copy.write_row(row)


class StreamedInsert:
    """`insert_new` for rows made one at a time, as a context manager:

        with StreamedInsert(Span) as spans:
            for ...:
                spans.write(row)

    On PostgreSQL each row goes into an open COPY as soon as it is written, and the server
    stores it while the worker computes the next ones (the two run on different cores), rather
    than after the last. Nothing else may use the connection inside the block. Rows stored
    already make the COPY fail at its end: the savepoint is rolled back and the rows are
    inserted the slower way, as `insert_new` does.
    """

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        self.columns = columns_of(model)
        self.rows: list[dict[str, Any]] = []
        self._stack = ExitStack()
        self._copy: Any = None

    def __enter__(self) -> StreamedInsert:
        if connection.vendor == "postgresql":
            self._stack.enter_context(transaction.atomic())
            self._stack.enter_context(connection.wrap_database_errors)
            cursor = self._stack.enter_context(connection.cursor())
            statement = _copy_statement(self.columns)
            self._copy = self._stack.enter_context(cursor.cursor.copy(statement))
        return self

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._copy is not None:
            self._copy.write_row(self.columns.copy_values(row))

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        if exc_type is not None:
            # Abort the COPY and roll the savepoint back; the error goes on.
            return bool(self._stack.__exit__(exc_type, exc, traceback))
        if self._copy is not None:
            try:
                self._stack.close()
                return False
            except IntegrityError:
                logger.info("some %s rows are stored already", self.model.__name__)
        _insert_skipping_stored(self.model, self.rows)
        return False

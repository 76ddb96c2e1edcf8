"""Each column type the exports know is written alike by Python, from the
typed value, and by the database, from the column: the same CSV cell and
the same NDJSON value, NULL included. The model's own types are covered by
test_exports.py; these are the others a new column may bring."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from flask import Flask
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    select,
)

from {{ cookiecutter.package_name }}.events.formats import format_of
from {{ cookiecutter.package_name }}.extensions import db

SAMPLES = Table(
    "export_format_samples",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("flag", Boolean, nullable=True),
    Column("day", Date, nullable=True),
    Column("count", Integer, nullable=True),
    Column("price", Numeric(10, 3), nullable=True),
    Column("note", String(20), nullable=True),
)
ROWS = [
    {
        "id": 1,
        "flag": True,
        "day": date(2026, 5, 6),
        "count": -3,
        "price": Decimal("1.500"),
        "note": 'say "hi", ü',
    },
    {
        "id": 2,
        "flag": False,
        "day": date(1000, 1, 1),
        "count": 0,
        "price": Decimal("-0.001"),
        "note": "",
    },
    {"id": 3, "flag": None, "day": None, "count": None, "price": None, "note": None},
]


def cell(value: object) -> str:
    """What Python's csv module writes for a field."""
    return "" if value is None else str(value)


def test_python_and_the_database_write_each_type_alike(app: Flask) -> None:
    columns = [column for column in SAMPLES.c if column.name != "id"]
    formats = [format_of(column) for column in columns]
    with app.app_context():
        dialect = db.engine.dialect.name
        SAMPLES.create(db.engine)
        try:
            with db.engine.begin() as connection:
                connection.execute(SAMPLES.insert(), ROWS)
                order = SAMPLES.c.id
                typed = connection.execute(select(*columns).order_by(order)).all()
                as_sql = [
                    getattr(f, dialect)(c)
                    for f, c in zip(formats, columns, strict=True)
                ]
                texts = connection.execute(select(*as_sql).order_by(order)).all()
        finally:
            SAMPLES.drop(db.engine)
    assert len(typed) == len(texts) == len(ROWS)
    for typed_row, text_row in zip(typed, texts, strict=True):
        fields = [f.python(value) for f, value in zip(formats, typed_row, strict=True)]
        assert [cell(field) for field in fields] == [cell(text) for text in text_row]
        encoded = [
            str(value if f.json is None else f.json(value))
            for f, value in zip(formats, fields, strict=True)
        ]
        expected = [json.dumps(field, ensure_ascii=False) for field in fields]
        assert encoded == expected
    assert [format_of(column).free_text for column in columns] == [
        False,
        False,
        False,
        False,
        True,
    ]

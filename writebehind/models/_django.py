"""Django: a model class (``app_label.ModelName`` resolved by the settings)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from django.db import models
from django.db.models.fields import NOT_PROVIDED

from ._model import ModelTable

try:  # Django 5.0+
    from django.db.models.expressions import DatabaseDefault
except ImportError:  # pragma: no cover - Django 4.2
    DatabaseDefault = ()  # type: ignore[assignment,misc]

__all__ = ["describe", "model_named"]


def describe(value: object) -> ModelTable | None:
    """The model of a Django model class; None for anything else."""
    if not (isinstance(value, type) and issubclass(value, models.Model)):
        return None
    meta = value._meta
    name = f"{meta.app_label}.{value.__name__}"
    if meta.abstract:
        raise TypeError(f"the Django model {name} is abstract: it has no table")
    if not meta.proxy and any(link is not None for link in meta.parents.values()):
        parents = ", ".join(parent.__name__ for parent in meta.parents)
        raise TypeError(
            f"the Django model {name} inherits from {parents} through several tables "
            "(multi-table inheritance): writebehind writes one table. Give a queue the table "
            "of each, or make the parent abstract"
        )
    fields = [field for field in meta.concrete_fields if field.column]
    defaults: dict[str, Callable[[], Any]] = {}
    refreshed: dict[str, Callable[[], Any]] = {}
    generated: set[str] = set()
    for field in fields:
        column = str(field.column)
        if getattr(field, "db_default", NOT_PROVIDED) is not NOT_PROVIDED or _is_auto(field):
            generated.add(column)
        now = _now_of(field)
        if now is not None:
            defaults[column] = now
            if getattr(field, "auto_now", False):
                refreshed[column] = now  # set by every save()
        elif field.has_default():
            defaults[column] = field.get_default
    pk = meta.pk
    assert pk is not None
    key_fields = getattr(pk, "fields", None) or [pk]  # Django 5.2's CompositePrimaryKey
    return ModelTable(
        name=name,
        table=meta.db_table,
        schema=None,
        primary_key=tuple(field.column for field in key_fields),
        model=value,
        columns=tuple(str(field.column) for field in fields),
        values=_values_of(fields),
        defaults=defaults,
        generated=frozenset(generated),
        assign=_assign_to(fields),
        unloaded=_unloaded_of(fields),
        nullable=frozenset(
            str(field.column)
            for field in fields
            if field.null and not field.has_default() and str(field.column) not in generated
        ),
        refreshed=refreshed,
    )


def model_named(label: str) -> type | None:
    """The model ``app_label.ModelName`` (as ``AUTH_USER_MODEL`` names one), or None for a
    name that is no label. LookupError for a label of an installed app that has no such
    model (a typo)."""
    from django.apps import apps

    if label.count(".") != 1:
        return None
    app_label, name = label.split(".")
    try:
        app = apps.get_app_config(app_label)
    except LookupError:
        return None  # no app of that label: a table name
    try:
        return app.get_model(name)
    except LookupError:
        known = ", ".join(sorted(model.__name__ for model in app.get_models())) or "none"
        raise LookupError(
            f"{label!r}: the app {app_label!r} has no model {name!r} (its models: {known})"
        ) from None


def _is_auto(field: Any) -> bool:
    return isinstance(field, models.AutoField | models.BigAutoField | models.SmallAutoField)


def _now_of(field: Any) -> Callable[[], Any] | None:
    if not (getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)):
        return None
    if isinstance(field, models.DateTimeField):
        return lambda: datetime.datetime.now(datetime.timezone.utc)
    if isinstance(field, models.DateField):
        return datetime.date.today
    return lambda: datetime.datetime.now().time()


def _unloaded_of(fields: list[Any]) -> Callable[[Any], frozenset[str]]:
    columns = {field.attname: str(field.column) for field in fields}

    def unloaded(instance: Any) -> frozenset[str]:
        if instance._state.adding:  # new: nothing to load
            return frozenset()
        return frozenset(
            columns[name] for name in instance.get_deferred_fields() if name in columns
        )

    return unloaded


def _assign_to(fields: list[Any]) -> Callable[[Any, Mapping[str, Any]], None]:
    attnames = {field.column: field.attname for field in fields}

    def assign(instance: Any, values: Mapping[str, Any]) -> None:
        for column, value in values.items():
            setattr(instance, attnames[column], value)

    return assign


_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, bytes})
"""Value types that are no query expression, checked without a look at their attributes."""


def _values_of(fields: list[Any]) -> Callable[[Any], dict[str, Any]]:
    # (attname, column, whether None means unset, the field if a ForeignKey) per field.
    plan = tuple(
        (
            field.attname,
            str(field.column),
            _is_auto(field) or _now_of(field) is not None,
            field if field.many_to_one else None,
        )
        for field in fields
    )

    def values(instance: Any) -> dict[str, Any]:
        given = instance.__dict__  # a deferred field is absent: reading it would query
        row = {}
        for attname, column, none_is_unset, foreign_key in plan:
            if attname not in given:
                continue
            value = given[attname]  # a ForeignKey's is its id: site_id
            if value is None:
                if none_is_unset:
                    continue  # unset: the database's, or now
                if foreign_key is not None:
                    value = _related_key(instance, foreign_key)
            elif type(value) not in _PLAIN:
                if isinstance(value, DatabaseDefault):
                    continue  # db_default: the database's
                if hasattr(value, "resolve_expression"):
                    raise TypeError(
                        f"column {column!r} holds a query expression ({value!r}), which "
                        "only Django's own save() evaluates: give it a value"
                    )
            row[column] = value
        return row

    return values


def _related_key(instance: Any, field: Any) -> Any:
    """The key of the object a ForeignKey holds, as save() takes it when the object was saved
    after it was assigned; ValueError for one never saved, as save() raises."""
    if not field.is_cached(instance):
        return None
    related = field.get_cached_value(instance)
    if related is None:
        return None
    key = getattr(related, field.target_field.attname)
    if key is None:
        raise ValueError(
            f"the related object of {field.name!r} is not saved: its key is unknown, and "
            f"{field.attname!r} would be NULL (Django's save() refuses it too)"
        )
    return key

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models


class LastVisit(models.Model):
    """The visits of each page: how many, the first and the last, and where the last came
    from. Written behind by the queue ``last_visits``, which merges each visit into the page's
    row: ``views`` summed, ``first_seen`` the earliest, ``last_seen`` the latest, ``referrer``
    the last one written."""

    page: models.CharField[str, str] = models.CharField(max_length=200, unique=True)
    views: models.BigIntegerField[int, int] = models.BigIntegerField()
    first_seen: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    last_seen: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    referrer: models.TextField[str | None, str | None] = models.TextField(null=True)


class Hit(models.Model):
    """One request, written behind by the queue ``hits`` as the model itself: its uuid4 key,
    its ``meta`` document and its time are made at put(), as save() would make them."""

    id: models.UUIDField[uuid.UUID, uuid.UUID] = models.UUIDField(
        primary_key=True, default=uuid.uuid4
    )
    visit: models.ForeignKey[LastVisit | None, LastVisit | None] = models.ForeignKey(
        LastVisit, on_delete=models.CASCADE, null=True
    )
    visit_id: int | None  # the ForeignKey's column: a row of the queue names it so
    path: models.CharField[str, str] = models.CharField(max_length=200)
    meta: models.JSONField[dict[str, str], dict[str, str]] = models.JSONField(default=dict)
    at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)
    seen: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now=True)

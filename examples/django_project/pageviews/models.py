from __future__ import annotations

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

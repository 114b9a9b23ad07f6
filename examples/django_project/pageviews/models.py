from __future__ import annotations

from datetime import datetime

from django.db import models


class LastVisit(models.Model):
    """The last visit of each page: when, and from where. Written behind by the queue
    ``last_visits``; each visit replaces the page's previous one, which is what an upsert does."""

    page: models.CharField[str, str] = models.CharField(max_length=200, unique=True)
    seen_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    referrer: models.TextField[str | None, str | None] = models.TextField(null=True)

from __future__ import annotations

from datetime import datetime

from django.db import models


class PageView(models.Model):
    """Views per page, written behind by the queue ``page_views``."""

    page: models.CharField[str, str] = models.CharField(max_length=200, unique=True)
    views: models.BigIntegerField[int, int] = models.BigIntegerField()
    updated_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(views__gte=0), name="views_gte_0")]

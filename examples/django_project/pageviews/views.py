from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from writebehind.django import get_queue


@csrf_exempt
@require_POST
def record_visit(request: HttpRequest, page: str) -> JsonResponse:
    """Count a visit of ``page``: accepted at once, written behind, merged into its row."""
    now = timezone.now()
    get_queue("last_visits").put(
        {
            "page": page,
            "views": 1,
            "first_seen": now,
            "last_seen": now,
            "referrer": request.headers.get("Referer"),
        }
    )
    return JsonResponse({"accepted": page}, status=202)

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from writebehind.django import get_queue


@csrf_exempt
@require_POST
def record_visit(request: HttpRequest, page: str) -> JsonResponse:
    """Record the last visit of ``page``: accepted at once, written behind."""
    get_queue("last_visits").put(
        {"page": page, "seen_at": timezone.now(), "referrer": request.headers.get("Referer")}
    )
    return JsonResponse({"accepted": page}, status=202)

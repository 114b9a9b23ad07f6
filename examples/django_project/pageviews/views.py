from __future__ import annotations

import uuid

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from pageviews.models import Hit, LastVisit
from writebehind.django import get_queue


@csrf_exempt
@require_POST
def record_visit(request: HttpRequest, page: str) -> JsonResponse:
    """Count a visit of ``page``: accepted at once, written behind, merged into its row."""
    now = timezone.now()
    visit = LastVisit(
        page=page, views=1, first_seen=now, last_seen=now, referrer=request.headers.get("Referer")
    )
    get_queue("last_visits").put(visit)  # the model's instance, written behind
    return JsonResponse({"accepted": page}, status=202)


@csrf_exempt
@require_POST
def record_hit(request: HttpRequest) -> JsonResponse:
    """Record a request as a Hit, written behind from the model instance itself."""
    hit = Hit(
        path=request.POST.get("path", "/"), meta={"agent": request.headers.get("User-Agent", "")}
    )
    get_queue("hits").put(hit)  # its time is made now (auto_now_add), as save() would
    return JsonResponse({"id": str(hit.id)}, status=202)


@csrf_exempt
@require_POST
def forget_hit(request: HttpRequest, hit: uuid.UUID) -> JsonResponse:
    """Delete a Hit, written behind in order with its puts."""
    get_queue("hits").delete(hit)
    return JsonResponse({"deleted": str(hit)}, status=202)

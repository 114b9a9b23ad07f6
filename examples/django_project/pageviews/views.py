from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from writebehind.django import get_queue


@csrf_exempt
@require_POST
def record_view(request: HttpRequest, page: str) -> JsonResponse:
    """Count a view of ``page``: accepted at once, written behind."""
    views = int(request.GET.get("views", "1"))
    get_queue("page_views").put({"page": page, "views": views, "updated_at": timezone.now()})
    return JsonResponse({"accepted": page}, status=202)

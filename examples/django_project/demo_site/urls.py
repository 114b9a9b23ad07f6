from django.urls import path
from pageviews import views

urlpatterns = [
    path("visits/<path:page>", views.record_visit),
    path("hits/<uuid:hit>", views.forget_hit),
    path("hits/", views.record_hit),
]

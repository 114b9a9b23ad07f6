from django.urls import path
from pageviews import views

urlpatterns = [
    path("visits/<path:page>", views.record_visit),
]

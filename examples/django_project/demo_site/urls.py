from django.urls import path
from pageviews import views

urlpatterns = [
    path("views/<path:page>", views.record_view),
]

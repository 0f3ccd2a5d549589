from django.urls import include, path

from . import views

urlpatterns = [
    path("bench/enqueue/", views.enqueue),
    path("", include("config.urls")),
]

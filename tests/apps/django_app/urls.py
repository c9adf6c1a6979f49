from django.urls import path

from tests.apps.django_app import views

urlpatterns = [
    path("", views.index),
    path("users/<int:pk>/", views.user_detail, name="user-detail"),
    path("boom/", views.boom),
    path("stream/", views.stream),
    path("class/", views.ClassView.as_view()),
    path("async/", views.async_view),
    path("async-boom/", views.async_boom),
]

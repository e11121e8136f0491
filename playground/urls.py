from __future__ import annotations

from django.urls import path

from playground import views

app_name = "playground"

urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.new_conversation, name="new"),
    path("<int:pk>/", views.conversation, name="conversation"),
    path("<int:pk>/send/", views.send, name="send"),
    path("<int:pk>/delete/", views.delete, name="delete"),
    path("turns/<int:pk>/", views.turn, name="turn"),
]

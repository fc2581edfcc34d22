from django.urls import path

from signals import views

app_name = "signals"

urlpatterns = [
    path("", views.signal_list, name="list"),
    path("rules/", views.rule_list, name="rules"),
    path("rules/<str:rule_id>/toggle/", views.rule_toggle, name="rule_toggle"),
]

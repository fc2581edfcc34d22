from django.urls import path

from traces import views

app_name = "traces"

urlpatterns = [
    path("", views.suspicious_requests, name="suspicious_requests"),
    path("export.csv", views.suspicious_requests_export, name="suspicious_requests_export"),
    path("traces/<str:trace_id>/", views.trace_detail, name="trace"),
    path("attackers/", views.attackers, name="attackers"),
    path("users/", views.users, name="users"),
]

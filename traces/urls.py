from django.urls import path

from traces import views

app_name = "traces"

urlpatterns = [
    path("", views.suspicious_requests, name="suspicious_requests"),
]

from django.urls import path

from services import views

app_name = "services"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("vulnerabilities/", views.vulnerabilities, name="vulnerabilities"),
]

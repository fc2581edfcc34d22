from django.urls import path

from services import views

app_name = "services"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("<int:pk>/enable-asm/", views.enable_asm, name="enable_asm"),
    path("<int:pk>/", views.service_detail, name="service"),
    path("vulnerabilities/", views.vulnerabilities, name="vulnerabilities"),
    path("vulnerabilities/<int:pk>/", views.vulnerability_detail, name="vulnerability"),
]

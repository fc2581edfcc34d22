"""REST routes of vulnerabilities and dependency uploads (/api/v1/)."""

from django.urls import URLPattern, path

from services import api_vulnerabilities as api

urlpatterns: list[URLPattern] = [
    path("vulnerabilities", api.VulnerabilityListApi.as_view(), name="vulnerabilities"),
    path("vulnerabilities/<int:pk>", api.VulnerabilityDetailApi.as_view(), name="vulnerability"),
    path(
        "vulnerabilities/<int:pk>/status",
        api.VulnerabilityStatusApi.as_view(),
        name="vulnerability_status",
    ),
    path("dependency-uploads", api.DependencyUploadApi.as_view(), name="dependency_uploads"),
]

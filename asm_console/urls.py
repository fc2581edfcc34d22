from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required, login_required
from django.urls import include, path
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import api as accounts_api
from accounts.models import APIKeyScope, Role
from accounts.permissions import role_required
from asm_console.api import ApiView
from asm_console.health import healthz
from services import api as services_api
from signals import api as signals_api
from traces import api as traces_api
from traces import views as traces_views


class SchemaApi(ApiView, SpectacularAPIView):
    # JSON first, so that errors come in the API's JSON error shape.
    renderer_classes = [OpenApiJsonRenderer, OpenApiYamlRenderer]
    read_role = Role.VIEWER
    read_scope = APIKeyScope.READ


class DocsView(SpectacularSwaggerSplitView):
    read_role = Role.VIEWER


# The docs are a page for people: unlike the JSON API, which DRF exempts from the login
# redirect, a signed-out visitor is sent to the login form.
api_docs = login_required(role_required(Role.VIEWER)(DocsView.as_view(url_name="api_schema")))


api_v1 = [
    path("me", accounts_api.MeApi.as_view(), name="me"),
    path("api-keys", accounts_api.APIKeyListApi.as_view(), name="api_keys"),
    path("api-keys/<int:pk>/revoke", accounts_api.APIKeyRevokeApi.as_view(), name="api_key_revoke"),
    path("services", services_api.ServiceListApi.as_view(), name="services"),
    path("services/<int:pk>", services_api.ServiceDetailApi.as_view(), name="service"),
    path("traces", traces_api.TraceIntakeApi.as_view(), name="traces"),
    path("traces/<str:trace_id>", traces_api.TraceDetailApi.as_view(), name="trace"),
    path("security-events", traces_api.SecurityEventListApi.as_view(), name="security_events"),
    path("detection-rules", signals_api.DetectionRuleListApi.as_view(), name="detection_rules"),
    path(
        "detection-rules/import",
        signals_api.DetectionRuleImportApi.as_view(),
        name="detection_rules_import",
    ),
    path(
        "detection-rules/<str:rule_id>",
        signals_api.DetectionRuleDetailApi.as_view(),
        name="detection_rule",
    ),
    path("", include("signals.api_urls_rules")),
    path("", include("signals.api_urls_triage")),
    path("", include("services.api_urls")),
]

urlpatterns = [
    path("", traces_views.attack_summary, name="summary"),
    path("healthz", healthz, name="healthz"),
    path("", include("traces.urls_agent")),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    # Signing out must work whatever the account's state.
    path("accounts/logout/", login_not_required(auth_views.LogoutView.as_view()), name="logout"),
    path(
        "accounts/password_change/",
        role_required(Role.VIEWER)(auth_views.PasswordChangeView.as_view()),
        name="password_change",
    ),
    path(
        "accounts/password_change/done/",
        role_required(Role.VIEWER)(auth_views.PasswordChangeDoneView.as_view()),
        name="password_change_done",
    ),
    path("services/", include("services.urls")),
    path("suspicious-requests/", include("traces.urls")),
    path("signals/", include("signals.urls")),
    path("notifications/", include("notifications.urls")),
    path("settings/", include("accounts.urls")),
    path("api/v1/", include((api_v1, "api"))),
    path("api/schema/", SchemaApi.as_view(), name="api_schema"),
    path(
        "api/docs/",
        api_docs,
        name="api_docs",
    ),
]

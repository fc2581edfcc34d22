"""REST routes of the signal rules (under /api/v1/)."""

from django.urls import URLPattern, path

from signals import api_signal_rules

urlpatterns: list[URLPattern] = [
    path("signal-rules", api_signal_rules.SignalRuleListApi.as_view(), name="signal_rules"),
    path(
        "signal-rules/<str:rule_id>",
        api_signal_rules.SignalRuleDetailApi.as_view(),
        name="signal_rule",
    ),
]

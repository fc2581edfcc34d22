"""REST routes of signal triage: signals and their actions, passlist, denylist (/api/v1/)."""

from django.urls import URLPattern, path

from signals import api_triage as api

urlpatterns: list[URLPattern] = [
    path("signals", api.SignalListApi.as_view(), name="signal_list"),
    path("signals/bulk", api.SignalBulkApi.as_view(), name="signal_bulk"),
    path("signals/<int:pk>", api.SignalDetailApi.as_view(), name="signal_detail"),
    path("signals/<int:pk>/assign", api.SignalAssignApi.as_view(), name="signal_assign"),
    path("signals/<int:pk>/status", api.SignalStatusApi.as_view(), name="signal_status"),
    path("signals/<int:pk>/archive", api.SignalArchiveApi.as_view(), name="signal_archive"),
    path("signals/<int:pk>/reopen", api.SignalReopenApi.as_view(), name="signal_reopen"),
    path("signals/<int:pk>/comments", api.SignalCommentApi.as_view(), name="signal_comments"),
    path(
        "signals/<int:pk>/passlist-suggestion",
        api.SignalPassSuggestionApi.as_view(),
        name="signal_passlist_suggestion",
    ),
    path("signals/<int:pk>/block", api.SignalBlockApi.as_view(), name="signal_block"),
    path("passlist", api.PassFilterListApi.as_view(), name="passlist"),
    path("passlist/impact", api.PassFilterImpactApi.as_view(), name="passlist_impact"),
    path("passlist/<int:pk>", api.PassFilterDetailApi.as_view(), name="passlist_entry"),
    path("denylist", api.DenylistListApi.as_view(), name="denylist"),
    path("denylist/<int:pk>", api.DenylistDetailApi.as_view(), name="denylist_entry"),
]

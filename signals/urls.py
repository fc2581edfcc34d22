from django.urls import path

from signals import views

app_name = "signals"

urlpatterns = [
    path("", views.signal_list, name="list"),
    path("bulk/", views.signal_bulk, name="bulk"),
    path("<int:pk>/", views.signal_detail, name="detail"),
    path("<int:pk>/assign/", views.signal_assign, name="assign"),
    path("<int:pk>/status/", views.signal_status, name="status"),
    path("<int:pk>/archive/", views.signal_archive, name="archive"),
    path("<int:pk>/reopen/", views.signal_reopen, name="reopen"),
    path("<int:pk>/comment/", views.signal_comment, name="comment"),
    path("<int:pk>/passlist/", views.signal_passlist, name="signal_passlist"),
    path("<int:pk>/block/", views.signal_block, name="block"),
    path("passlist/", views.passlist_page, name="passlist"),
    path("passlist/<int:pk>/end/", views.passlist_end, name="passlist_end"),
    path("denylist/", views.denylist_page, name="denylist"),
    path("denylist/<int:pk>/remove/", views.denylist_remove, name="denylist_remove"),
    path("rules/", views.rule_list, name="rules"),
    path("rules/<str:rule_id>/toggle/", views.rule_toggle, name="rule_toggle"),
    path("signal-rules/", views.signal_rules_page, name="signal_rules"),
    path("signal-rules/<str:rule_id>/", views.signal_rule_edit, name="signal_rule"),
]

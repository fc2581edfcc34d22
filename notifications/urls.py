from django.urls import include, path

from notifications import views

app_name = "notifications"

urlpatterns = [
    path("", views.notification_rules, name="rules"),
    path("rules/new/", views.rule_create, name="rule_create"),
    path("rules/<int:pk>/", views.rule_edit, name="rule_edit"),
    path("rules/<int:pk>/delete/", views.rule_delete, name="rule_delete"),
    path("channels/", views.channel_list, name="channels"),
    path("channels/<int:pk>/", views.channel_edit, name="channel_edit"),
    path("channels/<int:pk>/delete/", views.channel_delete, name="channel_delete"),
    path("channels/<int:pk>/test/", views.channel_test, name="channel_test"),
    path("deliveries/", views.delivery_log, name="deliveries"),
    path("deliveries/<int:pk>/", views.delivery_detail, name="delivery"),
    # Weekly digest pages (notifications/digest.py) go below this line.
    path("digest/", include("notifications.digest_views")),
]

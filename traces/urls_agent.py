"""The agent protocol lives at the root, where tracers expect their agent's endpoints."""

from django.urls import path

from traces import intake

urlpatterns = [
    path("info", intake.info, name="agent_info"),
    path("v0.4/traces", intake.traces_v04, name="agent_traces_v04"),
    path("v0.5/traces", intake.traces_v05, name="agent_traces_v05"),
    path("v0.6/stats", intake.stats, name="agent_stats"),
    path("v0.7/config", intake.remote_config, name="agent_config"),
    path("telemetry/proxy/api/v2/apmtelemetry", intake.telemetry, name="agent_telemetry"),
]

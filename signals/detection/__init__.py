"""The console's own request-level detection engine: rules in Datadog's appsec-event-rules
format, evaluated by the workers over every service-entry span."""

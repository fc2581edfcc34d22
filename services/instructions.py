"""How to enable ASM on a service, for each tracer language: the one environment variable,
where to set it, and the agent URL that sends the traces to this console."""

from __future__ import annotations

from dataclasses import dataclass

from services.models import Service


@dataclass(frozen=True)
class Language:
    key: str
    name: str
    # The tracer library the service must already run.
    tracer: str
    # How the service is started with the tracer and ASM on, as a shell command.
    command: str
    # Where else the variable can go, for the usual ways of running such a service.
    where: tuple[tuple[str, str], ...]
    note: str = ""
    selected: bool = False


_LANGUAGES = (
    Language(
        key="python",
        name="Python",
        tracer="ddtrace (pip install ddtrace)",
        command="DD_APPSEC_ENABLED=true DD_TRACE_AGENT_URL={agent} ddtrace-run gunicorn app:app",
        where=(
            ("Dockerfile", "ENV DD_APPSEC_ENABLED=true\nENV DD_TRACE_AGENT_URL={agent}"),
            (
                "Kubernetes",
                'env:\n  - name: DD_APPSEC_ENABLED\n    value: "true"\n'
                '  - name: DD_TRACE_AGENT_URL\n    value: "{agent}"',
            ),
        ),
        note="The service must start under ddtrace-run (or import ddtrace.auto first).",
    ),
    Language(
        key="java",
        name="Java",
        tracer="dd-java-agent.jar",
        command=(
            "DD_APPSEC_ENABLED=true DD_TRACE_AGENT_URL={agent} "
            "java -javaagent:/path/to/dd-java-agent.jar -jar app.jar"
        ),
        where=(
            (
                "JVM system properties",
                "-Ddd.appsec.enabled=true -Ddd.trace.agent.url={agent}",
            ),
            ("Dockerfile", "ENV DD_APPSEC_ENABLED=true\nENV DD_TRACE_AGENT_URL={agent}"),
        ),
    ),
    Language(
        key="nodejs",
        name="Node.js",
        tracer="dd-trace (npm install dd-trace)",
        command=(
            "DD_APPSEC_ENABLED=true DD_TRACE_AGENT_URL={agent} node --require dd-trace/init app.js"
        ),
        where=(
            ("Dockerfile", "ENV DD_APPSEC_ENABLED=true\nENV DD_TRACE_AGENT_URL={agent}"),
            ("In code, before any other require", "require('dd-trace').init({ appsec: true })"),
        ),
    ),
    Language(
        key="go",
        name="Go",
        tracer="dd-trace-go, with the service's HTTP router wrapped by its contrib package",
        command="DD_APPSEC_ENABLED=true DD_TRACE_AGENT_URL={agent} ./service",
        where=(("Dockerfile", "ENV DD_APPSEC_ENABLED=true\nENV DD_TRACE_AGENT_URL={agent}"),),
        note="Threat detection needs a router integration (net/http, gin, echo, chi...).",
    ),
    Language(
        key="ruby",
        name="Ruby",
        tracer="the datadog gem, with `require 'datadog/appsec'`",
        command="DD_APPSEC_ENABLED=true DD_TRACE_AGENT_URL={agent} bundle exec rails server",
        where=(
            ("Dockerfile", "ENV DD_APPSEC_ENABLED=true\nENV DD_TRACE_AGENT_URL={agent}"),
            (
                "config/initializers/datadog.rb",
                "Datadog.configure do |c|\n  c.appsec.enabled = true\nend",
            ),
        ),
    ),
    Language(
        key="php",
        name="PHP",
        tracer="the datadog PHP extension (datadog-setup.php --enable-appsec)",
        command="DD_APPSEC_ENABLED=true DD_TRACE_AGENT_URL={agent} php-fpm",
        where=(
            (
                "PHP-FPM pool (www.conf)",
                "env[DD_APPSEC_ENABLED] = true\nenv[DD_TRACE_AGENT_URL] = {agent}",
            ),
            ("php.ini", "datadog.appsec.enabled = On\ndatadog.trace.agent_url = {agent}"),
        ),
    ),
    Language(
        key="dotnet",
        name=".NET",
        tracer="the .NET tracer (Datadog.Trace)",
        command="DD_APPSEC_ENABLED=true DD_TRACE_AGENT_URL={agent} dotnet app.dll",
        where=(
            (
                "IIS (web.config or the application pool's environment)",
                '<environmentVariable name="DD_APPSEC_ENABLED" value="true" />\n'
                '<environmentVariable name="DD_TRACE_AGENT_URL" value="{agent}" />',
            ),
            ("Dockerfile", "ENV DD_APPSEC_ENABLED=true\nENV DD_TRACE_AGENT_URL={agent}"),
        ),
    ),
)

# What tracers report as `Datadog-Meta-Lang`, to each language's key.
_REPORTED = {
    "python": "python",
    "java": "java",
    "jvm": "java",
    "nodejs": "nodejs",
    "javascript": "nodejs",
    "go": "go",
    "golang": "go",
    "ruby": "ruby",
    "php": "php",
    "dotnet": "dotnet",
    ".net": "dotnet",
}


def for_service(service: Service, *, agent_url: str) -> list[Language]:
    """Every language's instructions with this console's URL filled in, the service's own
    language (from its tracer) selected, Python otherwise."""
    selected = _REPORTED.get(service.language.lower(), "python")
    return [
        Language(
            key=language.key,
            name=language.name,
            tracer=language.tracer,
            command=language.command.replace("{agent}", agent_url),
            where=tuple(
                (label, text.replace("{agent}", agent_url)) for label, text in language.where
            ),
            note=language.note,
            selected=language.key == selected,
        )
        for language in _LANGUAGES
    ]

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.models import Role
from accounts.permissions import role_required
from asm_console.http import HtmxHttpRequest
from traces import selectors

EXPORT_LIMIT = 10_000
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


@role_required(Role.VIEWER)
def suspicious_requests(request: HtmxHttpRequest) -> HttpResponse:
    filters = selectors.RequestFilters.from_query(request.GET.dict())
    context: dict[str, object] = {
        "filters": filters,
        "windows": list(selectors.WINDOWS),
        "choices": selectors.filter_choices(),
        "client_ip_header": settings.ASM_CLIENT_IP_HEADER,
    }
    status = 200
    try:
        page_number = int(request.GET.get("page") or 1)
    except ValueError:
        page_number = 1
    try:
        context["page"] = selectors.suspicious_request_page(filters=filters, page=page_number)
    except selectors.FilterError as exc:
        context["filter_error"] = str(exc)
        status = 400
    query = request.GET.copy()
    query.pop("page", None)
    context["query"] = query.urlencode()
    template = (
        "traces/suspicious_requests.html#request-table"
        if request.htmx and not request.htmx.boosted
        else "traces/suspicious_requests.html"
    )
    return render(request, template, context, status=status)


def csv_cell(value: object) -> str:
    """A value as a CSV cell a spreadsheet shows as text: attacker-controlled text that starts
    like a formula (`=HYPERLINK(...)`) gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


@role_required(Role.VIEWER)
def suspicious_requests_export(request: HtmxHttpRequest) -> HttpResponseBase:
    filters = selectors.RequestFilters.from_query(request.GET.dict())
    try:
        filters.events()  # validate before the response starts
    except selectors.FilterError as exc:
        return HttpResponse(f"Cannot export: {exc}\n", status=400, content_type="text/plain")

    def rows() -> Iterator[str]:
        writer = csv.writer(_Echo())
        yield writer.writerow(
            [
                "time",
                "service",
                "env",
                "method",
                "route",
                "url",
                "status",
                "client_ip",
                "user",
                "user_agent",
                "rule_types",
                "rules",
                "blocked",
                "trace_id",
                "span_id",
            ]
        )
        for item in selectors.suspicious_requests_all(filters=filters, limit=EXPORT_LIMIT):
            yield writer.writerow(
                [
                    csv_cell(value)
                    for value in (
                        item.detected_at.isoformat(),
                        item.service.name,
                        item.env,
                        item.method,
                        item.route,
                        item.url,
                        item.status_code,
                        item.client_ip,
                        item.user,
                        item.user_agent,
                        " ".join(item.rule_types),
                        " | ".join(item.rule_names),
                        "yes" if item.blocked else "no",
                        item.trace_id,
                        item.span_id,
                    )
                ]
            )

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="suspicious-requests-{stamp}.csv"'
    return response


@role_required(Role.VIEWER)
def trace_detail(request: HtmxHttpRequest, trace_id: str) -> HttpResponse:
    view = selectors.trace_view(trace_id=trace_id)
    if view is None:
        raise Http404("No such trace.")
    return render(request, "traces/trace_detail.html", {"trace": view})


@role_required(Role.VIEWER)
def attack_summary(request: HtmxHttpRequest) -> HttpResponse:
    window = request.GET.get("window") or selectors.DEFAULT_WINDOW
    if window not in selectors.WINDOWS:
        window = selectors.DEFAULT_WINDOW
    context = {
        "summary": selectors.attack_summary(window=window),
        "windows": list(selectors.WINDOWS),
        "window": window,
    }
    template = "traces/summary.html#summary" if request.htmx else "traces/summary.html"
    return render(request, template, context)


@role_required(Role.VIEWER)
def attackers(request: HtmxHttpRequest) -> HttpResponse:
    return _attacker_list(request, by="client_ip", title="Attackers", noun="IP address")


@role_required(Role.VIEWER)
def users(request: HtmxHttpRequest) -> HttpResponse:
    return _attacker_list(request, by="user", title="Users", noun="user")


def _attacker_list(request: HtmxHttpRequest, *, by: str, title: str, noun: str) -> HttpResponse:
    window = request.GET.get("window") or selectors.DEFAULT_WINDOW
    if window not in selectors.WINDOWS:
        window = selectors.DEFAULT_WINDOW
    try:
        page_number = max(int(request.GET.get("page") or 1), 1)
    except ValueError:
        page_number = 1
    per_page = 50
    rows, total = selectors.attacker_page(by=by, window=window, page=page_number, per_page=per_page)
    pages = max(1, -(-total // per_page))
    context = {
        "rows": rows,
        "total": total,
        "by": by,
        "title": title,
        "noun": noun,
        "window": window,
        "windows": list(selectors.WINDOWS),
        "page_number": page_number,
        "pages": pages,
        "url_name": "traces:attackers" if by == "client_ip" else "traces:users",
    }
    template = "traces/attackers.html#attacker-table" if request.htmx else "traces/attackers.html"
    return render(request, template, context)

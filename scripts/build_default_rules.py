#!/usr/bin/env python
"""Build the console's default detection rules: the source of truth of signals/rules/default.json.

Each rule is written here as readable Python: keyword lists grouped by purpose, each group with
a line on why an attacker uses those words, and regular expressions composed from named pieces.
The script writes the JSON the engine loads (Datadog appsec-event-rules format), sorted and
stable, so that a change to a rule is a readable diff of this file plus a regenerated JSON.

    .venv/bin/python scripts/build_default_rules.py          # write signals/rules/default.json
    .venv/bin/python scripts/build_default_rules.py --check  # exit 1 if the JSON on disk differs

Every expression must compile in RE2 (no lookarounds, no backreferences) and in Hyperscan without
falling back to prefiltering (tests/signals/test_default_rules.py checks both). All rules share
one transformer chain, so the engine scans each value once for all of them.

The keyword lists were written for this project from knowledge of the attack techniques; they
are deliberately short (the commands, classes and functions an attacker actually reaches for),
not exhaustive dictionaries.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT = REPO_ROOT / "signals" / "rules" / "default.json"
FORMAT_VERSION = "2.2"
RULES_VERSION = "2.0.0"

# One chain for every rule: the engine builds one Hyperscan database per chain.
CHAIN = ["urlDecodeUni", "htmlEntityDecode"]


# --- helpers -------------------------------------------------------------------------------------


def words(*groups: Iterable[str]) -> list[str]:
    """The union of keyword groups, sorted and without duplicates (case-insensitive)."""
    seen: dict[str, str] = {}
    for group in groups:
        for word in group:
            seen.setdefault(word.lower(), word)
    return sorted(seen.values(), key=str.lower)


def alt(items: Iterable[str], *, escape: bool = True) -> str:
    """A non-capturing alternation of literals (escaped) or of regex fragments."""
    parts = sorted({re.escape(item) if escape else item for item in items})
    return "(?:" + "|".join(parts) + ")"


def any_of(*fragments: str) -> str:
    """A non-capturing alternation of named regex fragments, kept in the given order."""
    return "(?:" + "|".join(fragments) + ")"


def inputs(*addresses: str) -> list[dict[str, Any]]:
    return [{"address": address} for address in addresses]


QUERY = "server.request.query"
BODY = "server.request.body"
COOKIES = "server.request.cookies"
PATH_PARAMS = "server.request.path_params"
HEADERS = "server.request.headers.no_cookies"
URI = "server.request.uri.raw"
FILENAMES = "server.request.body.filenames"

# Where a payload can sit: every parameter (query, body, path segments) and cookie values.
ARGS = (QUERY, BODY, PATH_PARAMS, COOKIES)
# Attack tools also put payloads in arbitrary headers (User-Agent, Referer, X-Forwarded-For...).
ARGS_AND_HEADERS = (*ARGS, HEADERS)


def regex(pattern: str, *on: str | dict[str, Any], case_sensitive: bool = False) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "inputs": [item if isinstance(item, dict) else {"address": item} for item in on],
        "regex": pattern,
    }
    if case_sensitive:
        parameters["options"] = {"case_sensitive": True}
    return {"operator": "match_regex", "parameters": parameters}


def operator(name: str, *on: str) -> dict[str, Any]:
    return {"operator": name, "parameters": {"inputs": inputs(*on)}}


def rule(
    rule_id: str,
    name: str,
    *,
    type_: str,
    cwe: str,
    capec: str,
    conditions: Sequence[dict[str, Any]],
    confidence: str = "1",
    keys_only: bool = False,
    subtype: str = "",
) -> dict[str, Any]:
    tags = {
        "type": type_,
        "category": "attack_attempt",
        "cwe": cwe,
        "capec": capec,
        "confidence": confidence,
    }
    if subtype:
        tags["subtype"] = subtype
    return {
        "id": rule_id,
        "name": name,
        "tags": tags,
        "conditions": list(conditions),
        "transformers": (["keys_only"] if keys_only else []) + CHAIN,
        "on_match": [],
    }


# Where an injected value starts: the start of the value or right after a delimiter that ends
# the previous token in a query string, JSON, XML attribute or HTML.
VALUE_START = r"(?:^|[\s?&=\"'>(,:;])"


# --- security scanners and attack tools (913) ----------------------------------------------------

# Tools identify themselves in the User-Agent unless told otherwise; few operators bother.
SCANNER_AGENTS = words(
    # SQL and command injection automation.
    ["sqlmap", "havij", "jsql", "bbqsql", "sqlninja", "pangolin", "commix", "nosqlmap"],
    # Web vulnerability scanners, open source and commercial.
    ["nikto", "nuclei", "wapiti", "w3af", "skipfish", "arachni", "acunetix", "netsparker"],
    ["invicti", "appscan", "webinspect", "qualys", "nessus", "openvas", "burp", "zaproxy"],
    ["owasp zap", "vega/", "paros", "wpscan", "joomscan", "droopescan", "whatweb"],
    ["xsstrike", "dalfox", "jaeles", "tplmap", "ssrfmap", "xsser", "wafw00f", "detectify"],
    # Content discovery and fuzzers: they brute-force paths and parameters.
    ["dirbuster", "dirb/", "gobuster", "feroxbuster", "fuzz faster u fool", "ffuf", "wfuzz"],
    ["dirsearch", "httpx - open-source", "katana", "hakrawler", "arjun"],
    # Port and internet-wide scanners probing web servers.
    ["nmap scripting engine", "nmap", "masscan", "zgrab", "zmap"],
    # Login brute-forcers and exploitation frameworks.
    ["hydra", "medusa", "metasploit", "brutus", "morfeus", "zmeu", "backdoorbot"],
    # Datadog's documented test agents: they let a team check the pipeline end to end.
    ["dd-test-scanner-log"],
)
# Headers that scanners add to their own requests.
SCANNER_HEADER_PATTERNS = [
    r"acunetix",  # Acunetix-Product, Acunetix-Aspect-*
    r"x-wipp",  # WebInspect
    r"x-scanner",
]
# Out-of-band interaction domains: a payload that calls home to one proves a blind bug.
OOB_DOMAINS = words(
    ["burpcollaborator.net", "oastify.com", "interact.sh", "interactsh.com"],
    ["oast.pro", "oast.live", "oast.site", "oast.online", "oast.fun", "oast.me"],
    ["dnslog.cn", "ceye.io", "requestbin.net", "canarytokens.com", "xss.ht", "bxss.me"],
)

SCANNER_RULE = rule(
    "asm-913-100",
    "Security scanner or attack tool: its user agent, a header it adds, or an out-of-band "
    "testing domain",
    type_="security_scanner",
    cwe="200",
    capec="1000/118/169",
    conditions=[
        regex(
            any_of(
                r"\b" + alt(SCANNER_AGENTS) + r"\b",
                r"\b[\w-]+\." + alt(OOB_DOMAINS) + r"\b",
            ),
            HEADERS,
            QUERY,
            BODY,
        )
    ],
)
SCANNER_HEADER_RULE = rule(
    "asm-913-110",
    "Security scanner: a header only scanners send",
    type_="security_scanner",
    cwe="200",
    capec="1000/118/169",
    keys_only=True,
    conditions=[regex("^" + any_of(*SCANNER_HEADER_PATTERNS), HEADERS)],
)


# --- protocol attacks (921) ----------------------------------------------------------------------

HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"]
# Headers an attacker forges once a CR/LF lets them end the current header or response line.
INJECTED_HEADERS = words(
    ["set-cookie", "location", "content-type", "content-length", "transfer-encoding"],
    ["refresh", "host", "x-forwarded-for", "x-forwarded-host", "remote-addr", "x-real-ip"],
    ["access-control-allow-origin", "content-security-policy", "cache-control", "link"],
)
LINE_BREAK = r"[\r\n]"
# A second request inside a parameter: request smuggling or a proxied request line.
SMUGGLED_REQUEST = alt(HTTP_METHODS) + r"\s+\S+\s+HTTP/\d"
# A whole response inside a parameter: response splitting.
SPLIT_RESPONSE = r"HTTP/\d(?:\.\d)?\s+\d{3}\b"
HEADER_INJECTION = LINE_BREAK + r"+[ \t]*" + alt(INJECTED_HEADERS) + r"\s*:[ \t]*[^\s]"

PROTOCOL_RULE = rule(
    "asm-921-110",
    "HTTP response splitting, header injection or request smuggling through a parameter or header",
    type_="http_protocol_violation",
    subtype="protocol_attack",
    cwe="113",
    capec="1000/210/272/220/33",
    conditions=[
        regex(
            any_of(
                HEADER_INJECTION,
                LINE_BREAK + r"\s*" + SMUGGLED_REQUEST,
                VALUE_START + SMUGGLED_REQUEST,
                LINE_BREAK + r"\s*" + SPLIT_RESPONSE,
            ),
            *ARGS_AND_HEADERS,
            # Parameter names are not among the values: the raw URI shows them.
            URI,
        )
    ],
)


# --- LDAP injection (921200) ---------------------------------------------------------------------

LDAP_ATTRIBUTE = r"[a-z][\w.-]*\s*[~<>]?="
LDAP_RULE = rule(
    "asm-921-200",
    "LDAP injection: filter syntax closing and reopening a clause",
    type_="ldap_injection",
    cwe="90",
    capec="1000/152/248/136",
    conditions=[
        regex(
            any_of(
                # `*)(uid=*` closes the application's clause and opens one of the attacker's.
                r"\)\s*\(\s*[|&!]?\s*\(?\s*" + LDAP_ATTRIBUTE,
                # A lone wildcard closing the clause: `user=*)`.
                VALUE_START + r"\s*\*\s*\)",
                # `)(|(`, `)(&)`: an OR/AND/NOT operator spliced between clauses.
                r"\)\s*[|&!]\s*\(",
                r"\)\s*\(\s*[|&]\s*\)",
            ),
            *ARGS,
        )
    ],
)


# --- local file inclusion, path traversal, sensitive files (930) ---------------------------------

# Climbing out of the web root: `../`, `..\`, and what survives one decoding (`..%2f`, `%2e%2e/`).
TRAVERSAL = any_of(
    r"(?:^|[\\/=])\.{2,}[\\/]+\.{2,}[\\/]",  # at least two levels: ../../
    r"\.{2,}[\\/]+(?:[\w.-]+[\\/]+){0,3}\.{2,}[\\/]",
    r"(?:%2e|\.){2}(?:%2f|%5c)",  # an encoding left after the first decoding round
    r"(?:0x2e|\.)\x00?(?:0x2e|\.)\x00?(?:0x2f|0x5c)|(?:0x5c|0x2f)(?:0x2e|\.){2}",  # C-style hex
    r"(?:^|[=\s])\.{2,}\\",  # a Windows climb: ..\
    r"\.{2}(?:%c0%af|%c1%9c|%u2215|%u2216|%ef%bc%8f)",  # overlong and full-width slashes
    r"(?:^|[\\/=])\.{2,}[\\/]+(?:etc|proc|var|usr|windows|winnt|boot|root|home)\b",
)
# Files an attacker reads to prove the bug and harvest secrets, with their full path.
OS_FILES = words(
    # Unix accounts, hosts and system identity.
    ["etc/passwd", "etc/shadow", "etc/group", "etc/gshadow", "etc/sudoers", "etc/hosts"],
    ["etc/issue", "etc/os-release", "etc/hostname", "etc/crontab", "etc/fstab"],
    ["etc/resolv.conf", "etc/ssh/sshd_config", "etc/mysql/my.cnf", "etc/nginx/nginx.conf"],
    ["etc/httpd/conf", "etc/apache2/apache2.conf", "etc/php.ini", "etc/security/"],
    ["etc/subuid", "etc/subgid", "etc/machine-id", "etc/profile", "etc/environment"],
    # The running process: its environment (secrets), command line, memory maps, file handles.
    ["proc/self/environ", "proc/self/cmdline", "proc/self/maps", "proc/self/fd/"],
    ["proc/self/status", "proc/self/cwd", "proc/self/exe", "proc/version", "proc/net/"],
    ["proc/1/environ", "proc/sched_debug", "proc/mounts"],
    # Kernel and hardware details that fingerprint the host (and the container around it).
    ["sys/class", "sys/kernel", "sys/devices", "sys/firmware", "proc/interrupts", "proc/cpuinfo"],
    # Logs, for log poisoning: write PHP into a log through a header, then include it.
    ["var/log/apache", "var/log/httpd", "var/log/nginx", "var/log/auth.log", "var/log/secure"],
    ["var/log/messages", "var/log/syslog", "var/mail/", "var/spool/cron"],
    ["var/lib/php/sess", "var/run/secrets/kubernetes.io", "usr/local/apache", "root/."],
    # Windows system files that are always present.
    ["boot.ini", "win.ini", "system.ini", "windows/system32", "winnt/system32"],
    ["windows/repair/sam", "inetpub/", "system32/drivers/etc/hosts", "windows/panther/"],
)
# Files sensitive wherever they sit: secrets, VCS metadata, credentials, backups.
SECRET_FILES = words(
    # Environment and framework secrets.
    [".env", ".env.local", ".env.production", ".env.development", ".flaskenv"],
    ["wp-config.php", "localsettings.php", "config.inc.php", "settings.local.php"],
    ["web.config", "applicationhost.config", "appsettings.json", "secrets.yml"],
    ["database.yml", "credentials.yml", "master.key", "parameters.yml", "local.xml"],
    # Version control metadata: it gives away the whole source tree.
    [".git/", ".gitconfig", ".git-credentials", ".svn/", ".hg/", ".bzr/", "cvs/root"],
    # Web server access control and its password files.
    [".htaccess", ".htpasswd", ".user.ini", "web-inf/", "meta-inf/"],
    # Credentials of shells, clouds, package registries and container tools.
    [".ssh/", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "authorized_keys", "known_hosts"],
    [".aws/credentials", ".aws/config", ".azure/", ".config/gcloud", ".kube/config"],
    [".docker/config.json", ".docker/secrets", ".npmrc", ".pypirc", ".netrc", ".pgpass"],
    [".my.cnf", ".bash_history", ".zsh_history", ".mysql_history", ".psql_history"],
    [".terraform/", "terraform.tfstate", ".vault-token", "docker-compose.yml", ".dockerenv"],
    # Editor, IDE and OS leftovers that list files or hold deploy credentials.
    [".ds_store", ".idea/", ".vscode/", "sftp-config.json", ".ftpconfig", "thumbs.db"],
    # AI coding assistant settings and memories: prompts, tool permissions, API keys.
    [".cursor/", ".cursorrules", ".cursorignore", ".claude/", "claude.md", ".aider"],
    [".windsurf/", ".windsurfrules", ".codeium/", ".continue/", ".clinerules", ".roo/"],
    [".gemini/", "gemini.md"],
    [".copilot", "copilot-instructions.md", ".aiignore", ".opencode/", ".kiro/", ".zed/"],
    [".plandex/", ".fabric/", ".tabnine", ".codex/", "agents.md", ".mcp.json", "mcp.json"],
    [".cline/", ".junie/", ".rovodev/", ".n8n/", ".qodo/", ".augment/", ".amazonq/"],
    # Debug logs that web apps leave in their public folders.
    ["debug.log", "error.log", "errors.log", "error_log", "php_errors.log", "laravel.log"],
)
# Debug, status and management endpoints: they print configuration, environment and memory.
DEBUG_ENDPOINTS = words(
    ["phpinfo.php", "info.php", "server-status", "server-info", "elmah.axd", "trace.axd"],
    ["actuator/env", "actuator/heapdump", "actuator/threaddump", "actuator/configprops"],
    ["actuator/mappings", "actuator/logfile", "actuator/jolokia", "actuator/gateway", "jolokia"],
    ["_profiler", "debug/pprof", "debug/vars", "jmx-console", "web-console", "manager/html"],
    ["__debug__", "_debugbar", "adminer.php"],
)
# Copies left next to the original by editors and admins: the server returns them as text.
BACKUP_SUFFIXES = words(["bak", "backup", "old", "orig", "save", "swp", "swo", "tmp", "copy"])
# Database dumps: the data itself.
DUMP_EXTENSIONS = words(["sql", "sql.gz", "sql.zip", "sql.bz2", "sql.tar.gz", "dump", "mdb"])
# Archives of the whole site, under the names people give them.
SITE_ARCHIVE_NAMES = words(
    ["backup", "backups", "site", "www", "htdocs", "public_html", "wwwroot", "web", "html"],
    ["db", "database", "dump", "export", "old"],
)
ARCHIVE_EXTENSIONS = words(["zip", "tar", "tar.gz", "tgz", "tar.bz2", "rar", "7z", "gz"])
FILE_END = r"(?:$|[?#&])"
BACKUP_FILE = any_of(
    r"[\w-]\." + alt(BACKUP_SUFFIXES) + FILE_END,
    r"[\w-]\.\w{2,5}~" + FILE_END,
    r"(?:^|[\\/=])[\w.-]+\." + alt(DUMP_EXTENSIONS) + FILE_END,
    r"(?:^|[\\/=])" + alt(SITE_ARCHIVE_NAMES) + r"\." + alt(ARCHIVE_EXTENSIONS) + FILE_END,
)
# A path segment boundary before a file name: start, a slash, a parameter value, @fs (Vite).
SEGMENT_START = r"(?:^|[\\/=:@])"

LFI_RULE = rule(
    "asm-930-100",
    "Path traversal, access to operating system files, or a request for secret and backup files",
    type_="lfi",
    cwe="22",
    capec="1000/255/153/126",
    conditions=[
        regex(
            any_of(
                TRAVERSAL,
                # A value that is the path itself (text that mentions /etc/hosts is not).
                r"(?:^\s*|file:/*|\.[\\/]|@fs/)[\\/]?" + alt(OS_FILES),
                SEGMENT_START + alt(f for f in SECRET_FILES if f.endswith("/")),
                SEGMENT_START
                + alt(f for f in SECRET_FILES if not f.endswith("/"))
                + r"(?:$|[\\/?#&.\x00_-])",
                r"(?:^|/)" + alt(DEBUG_ENDPOINTS) + r"(?:$|[/?#&])",
                BACKUP_FILE,
            ),
            URI,
            *ARGS_AND_HEADERS,
        )
    ],
)
# A file name that climbs directories: the upload lands outside its folder.
UPLOAD_TRAVERSAL_RULE = rule(
    "asm-930-110",
    "Path traversal in an uploaded file name",
    type_="lfi",
    cwe="22",
    capec="1000/255/153/126",
    conditions=[regex(r"(?:^|[\\/])\.\.[\\/]", FILENAMES)],
)


# --- remote file inclusion (931) -----------------------------------------------------------------

IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
URL_SCHEME = r"(?:https?|ftps?|smb|webdav)://"
# Parameters that PHP apps commonly pass to include()/require(): classic RFI targets.
INCLUDE_PARAMETERS = words(
    ["page", "file", "include", "inc", "require", "template", "tpl", "path", "dir"],
    ["mosconfig_absolute_path", "base_path", "root_path", "abspath", "module", "lang"],
)
RFI_RULE = rule(
    "asm-931-100",
    "Remote file inclusion: URL to a raw IP address, a trailing '?' or a known include parameter",
    type_="rfi",
    cwe="98",
    capec="1000/152/175/253/193",
    conditions=[
        regex(
            any_of(
                # Code fetched from a bare address: hosting an include on a domain leaves traces.
                r"^\s*"
                + URL_SCHEME
                + r"(?:[^/@\s]*@)?(?:"
                + IPV4
                + r"|\[?[0-9a-f]*:[0-9a-f:]+\]?)",
                # A trailing `?` (or `%00`) turns the app's appended `.php` into a query string.
                r"^\s*" + URL_SCHEME + r"[^\s]+\?$",
                r"[?&]" + alt(INCLUDE_PARAMETERS) + r"=\s*" + URL_SCHEME,
            ),
            QUERY,
            BODY,
            COOKIES,
            URI,
        )
    ],
)


# --- command injection (932) ---------------------------------------------------------------------

# The commands an attacker runs once a separator lets them start a new one.
UNIX_COMMANDS = words(
    # Recon: who am I, where am I, what is around.
    ["id", "whoami", "uname", "hostname", "ifconfig", "ip", "netstat", "ss", "ps", "w", "who"],
    ["last", "lsof", "env", "printenv", "groups", "uptime", "df", "mount", "getent", "arp"],
    ["route", "dmesg", "lscpu", "lsb_release", "pwd", "ls", "dir", "locate", "find", "which"],
    ["top", "htop", "lastlog", "date"],
    # Reading and encoding files to get them out through the response.
    ["cat", "tac", "head", "tail", "more", "less", "nl", "od", "xxd", "hexdump", "strings"],
    ["base64", "base32", "rev", "sort", "uniq", "cut", "awk", "gawk", "sed", "grep", "egrep"],
    ["fgrep", "tr", "diff", "dd", "file", "stat", "tee", "vi", "vim", "nano", "ed", "readlink"],
    # Fetching tools and exfiltrating data; opening reverse shells.
    ["curl", "wget", "nc", "ncat", "netcat", "socat", "telnet", "ftp", "tftp", "scp", "sftp"],
    ["rsync", "ssh", "ssh-copy-id", "lynx", "aria2c", "dig", "nslookup", "host", "ping"],
    ["traceroute", "openssl", "mail", "sendmail", "fetch", "xterm"],
    # Shells and interpreters that run a one-liner.
    ["sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox", "python", "python2"],
    ["python3", "perl", "ruby", "irb", "php", "node", "nodejs", "lua", "tclsh", "jshell"],
    ["java", "gdb", "expect", "rlwrap", "xargs", "exec", "eval", "source", "nohup", "setsid"],
    ["timeout", "nice", "time", "watch", "strace", "script", "sudoedit", "awk", "bc"],
    # Persistence, privilege and damage.
    ["crontab", "at", "chmod", "chown", "chgrp", "chattr", "useradd", "usermod", "adduser"],
    ["passwd", "chpasswd", "sudo", "su", "doas", "pkexec", "visudo", "systemctl", "service"],
    ["kill", "killall", "pkill", "shutdown", "reboot", "halt", "poweroff", "insmod", "modprobe"],
    ["mkfifo", "mknod", "ln", "cp", "mv", "rm", "touch", "mkdir", "trap", "alias", "unset"],
    ["export", "iptables", "setcap", "history", "disown", "wall", "echo", "printf"],
    # Archives: pack what to steal, unpack what to plant.
    ["tar", "zip", "unzip", "gzip", "gunzip", "zcat", "bzip2", "xz", "unxz", "7z", "cpio"],
    # Compilers and build tools: build a dropped exploit.
    ["gcc", "cc", "c89", "c99", "clang", "make", "as", "ld"],
    # Database clients: dump the data with the credentials found in the app's environment.
    ["mysql", "mysqldump", "psql", "pg_dump", "sqlite3", "mongo", "mongosh", "redis-cli"],
    # Other programs that print a file given as an argument (the GTFOBins trick for reading a
    # file when cat is filtered), and wrappers that run the program named after them.
    ["fmt", "fold", "column", "comm", "join", "paste", "pr", "expand", "unexpand", "look"],
    ["iconv", "split", "csplit", "basenc", "ul", "flock", "cpulimit", "stdbuf", "taskset"],
    ["ionice", "chroot", "unshare", "nsenter", "capsh", "run-parts"],
    # Time-based probes: a delay proves blind execution.
    ["sleep", "usleep", "yes", "seq", "expr", "true", "false"],
)
WINDOWS_COMMANDS = words(
    # Shells and script hosts.
    ["cmd", "powershell", "pwsh", "wscript", "cscript", "mshta", "rundll32", "regsvr32"],
    # Living-off-the-land downloaders and executors.
    ["certutil", "bitsadmin", "msiexec", "installutil", "regasm", "msbuild", "wmic", "forfiles"],
    # Recon and account changes.
    ["whoami", "systeminfo", "tasklist", "taskkill", "ipconfig", "net", "net1", "netsh", "sc"],
    ["schtasks", "reg", "qwinsta", "nltest", "dsquery", "vssadmin", "wevtutil", "bcdedit"],
    # Reading files.
    ["type", "findstr", "icacls", "attrib", "copy", "xcopy", "robocopy", "del", "ren"],
)
# PowerShell: cmdlets and .NET calls used to download and run code.
POWERSHELL_CMDLETS = words(
    # Download and run.
    ["invoke-expression", "invoke-webrequest", "invoke-restmethod", "start-bitstransfer"],
    ["invoke-command", "invoke-wmimethod", "start-process", "new-object"],
    # Offensive modules, and switching off the defences first.
    ["invoke-shellcode", "invoke-mimikatz", "set-executionpolicy", "set-mppreference"],
    ["add-mppreference"],
)
POWERSHELL = any_of(
    r"\b" + alt(POWERSHELL_CMDLETS) + r"\b",
    r"\.(?:downloadstring|downloadfile|downloaddata|uploadstring)\s*\(",
    r"\[(?:system\.)?(?:convert|text\.encoding|net\.webclient|reflection\.assembly|io\.file)\]",
    r"(?:^|\s)-(?:enc|encodedcommand|e)\s+[a-z0-9+/]{16,}={0,2}",
    r"(?:^|\s)-(?:exec(?:utionpolicy)?|ep)\s+bypass\b",
    r"(?:^|\s)-(?:w|windowstyle)\s+hidden\b",
    r"\b(?:iex|iwr|irm|saps)\s*[\s(]\s*[\w$(\[\"']",
)
# A new command starts after one of these: the shell's separators and substitutions. A backtick
# counts only alone: Markdown fences code in three of them (```bash).
COMMAND_START = r"(?:[;&|\n\r]|\$\(|<\(|>\(|(?:^|[^`])`)"
# What may sit between the separator and the command: blanks, quotes, grouping, ${IFS}.
COMMAND_PREFIX = r"(?:\s|\$\{?[A-Za-z_]\w*\}?\s|\$\{?IFS\}?|[\"'({\\])*"
# An absolute path to the command: /bin/, /usr/local/sbin/.
UNIX_PATH = r"(?:(?:/[\w.-]*)*/)?"
# What ends the command word: blanks, another operator, a quote, a redirection, the end.
COMMAND_END = r"(?:[\s;&|<>'\"`)}]|\$\{?IFS|$)"
# Unix command names are case-sensitive (a shell runs `cat`, never `Cat`), so "Tom & Jerry;
# More soon" is prose; Windows names fold case. Command names that are also English words count
# after a separator only with an argument that looks like one (an option, a path, a variable, a
# quote, a redirection, a number) or alone at the end: "Tom & Jerry; join the club" stays prose
# while "; join -t: a /etc/x" and "|sleep 5" do not.
ENGLISH_WORD_COMMANDS = words(
    ["at", "as", "w", "who", "time", "date", "more", "less", "find", "head", "sort", "file"],
    ["last", "watch", "ed", "nl", "cut", "tr", "yes", "true", "false", "seq", "expr", "cp"],
    ["echo", "source", "service", "host", "mail", "fetch", "kill", "make", "touch", "tail"],
    ["script", "history", "export", "trap", "alias", "wall", "dir", "java", "mount", "top"],
    ["join", "split", "paste", "look", "expand", "column", "comm", "fold", "pr", "ul", "fmt"],
    ["sleep", "ping", "stat", "strings", "which", "diff", "rev", "uniq", "groups", "route"],
    ["disown", "exec", "eval", "unset", "env", "nice", "timeout", "locate"],
)
UNAMBIGUOUS_COMMANDS = sorted(set(UNIX_COMMANDS) - set(ENGLISH_WORD_COMMANDS))
ARGUMENT = r"(?:\s+(?:-{1,2}[a-z]|[/~.$'\"`<>|]|\d)|\s*[;&|<>`)]|\s*$)"
UNIX_COMMAND = (
    COMMAND_START
    + COMMAND_PREFIX
    + UNIX_PATH
    + any_of(
        alt(UNAMBIGUOUS_COMMANDS) + COMMAND_END,
        alt(set(UNIX_COMMANDS) & set(ENGLISH_WORD_COMMANDS)) + ARGUMENT,
    )
)
WINDOWS_COMMAND = (
    "(?i:"
    + COMMAND_START
    + COMMAND_PREFIX
    + r"(?:[a-z]:\\(?:[\w .-]+\\)*)?"
    + alt(WINDOWS_COMMANDS)
    + r"(?:\.exe)?"
    + COMMAND_END
    + ")"
)
# A command name split by quotes or backslashes, which the shell removes: c'a't, w\ho\ami.
QUOTE_EVASION = COMMAND_START + r"\s*[a-z]+(?:''|\"\"|\\|'[a-z]+'|\"[a-z]+\")[a-z]+\b"
# Globbing instead of a path: /???/c?t /e??/p?sswd, /usr/[a-z]in/bash.
GLOB_PATH = any_of(
    r"(?:^|[\s;|&=])/(?:[\w.-]*(?:\?|\*|\[!?[^\]\s]{1,12}\])[\w.?*\[\]!-]*/)+[\w.?*\[\]!-]*",
    # A bracket expression inside a file name: /etc/pa[s]swd (not a regex such as /[a-z]{2}/).
    r"(?:^|[\s;|&=])(?:/[\w.-]+)*/[\w.-]*\[!?[^\]\s]{1,12}\][\w.-]+",
)
SHELL_EXPANSION = any_of(
    r"\$\(\s*[\w/.'\"$\\-]",  # $(command)
    r"\$\{\s*(?:IFS|PATH|HOME|SHELL|PWD|PS[1-4]|SHLVL|RANDOM)\b",  # ${IFS} and friends
    r"\$\{\s*\w+\s*:\s*-?\d+\s*(?::\s*-?\d+)?\s*\}",  # substring tricks: ${PATH:0:1}
    r"\$\{\s*!?\w*[#%^,@]+[^}]*\}",  # parameter expansion operators
    r"\$\[[^\]]*\]",  # arithmetic $[ ]
    r"\$\(\(",  # arithmetic $(( ))
    r"(?:^|\s)~[+-]\d*(?:$|[\s/])",  # directory-stack expansion
    r"\$\{?IFS\}?",
    r"\w\$@\w",  # c$@at: "$@" expands to nothing
    r"[<>]\(\s*[\w/]",  # process substitution
)
# Shellshock: a function definition in an environment variable (header) runs what follows.
SHELLSHOCK = r"\(\s*\)\s*\{[^}]*;\s*\}\s*;?"
# Bash brace expansion runs a command without spaces: {cat,/etc/passwd}.
BRACE_EXPANSION = any_of(
    r"\{\s*" + alt(UNIX_COMMANDS) + r"\s*,[^}\s]*\}",
    r"\{,[\w/.-]+(?:,[\w/.-]*)*\}",  # an empty first word: {,ifconfig}
    r"\{[\w/.]*,\s*-[\w-]+\}",  # an option inside: {ls,-la}
    r"[a-z]\{[a-z]*,[a-z]*\}[a-z]",  # a name split in two: c{a,oun}t
)
# A fork bomb: a function that pipes itself into itself in the background.
FORK_BOMB = r"[\w:.]+\s*\(\s*\)\s*\{[^}]{0,20}\|[^}]{0,20}&[^}]{0,10}\}"
# Shell history and aliases: run a previous command, or name a command under another name.
HISTORY = r"(?:^|[;&|`]\s*)!(?:!|-?\d+)(?:$|[\s;&|:])"
ALIAS = r"\balias\s+(?:[-+]\w+\s+)*[\"']?[\w.-]+[\"']?\s*="
# Windows batch control flow: `for /f %i in (...) do`, `if exist`, `if "a" equ "b"`.
WINDOWS_FOR = any_of(
    r"\bfor\s+(?:/[a-z]\s+)*(?:\"[^\"]*\"\s+)?%%?\S{1,3}\s+in\s*\(",
    r"\bfor\b[^()\n]{0,60}\bin\s*\([^)]*\)\s*do\b",
)
# A batch IF compares two tokens with == and runs a command: "if x == y:" is Python.
BATCH_OPERAND = r"(?:\"[^\"]*\"|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}|[^\s=]+)"
WINDOWS_IF = (
    r"\bif\s+(?:/i\s+)?(?:not\s+)?"
    r"(?:exist\s|defined\s|errorlevel\s+\d|cmdextversion\s"
    r"|\S+\s+(?:equ|neq|lss|leq|gtr|geq)\s|%[\w~]+%?\s*==)"
)
WINDOWS_IF_COMPARE = (
    r"\bif\s*(?:/i\s*)?(?:not\s+)?"
    + BATCH_OPERAND
    + r"\s*===?\s*"
    + BATCH_OPERAND
    + r"\s+[@(]?[a-z]"
)
# Windows paths to the shells and system tools, and environment variables they expand.
WINDOWS_SHELL = any_of(
    r"\b(?:cmd|command)(?:\.exe)?\s*/[ck]\b",
    r"%(?:comspec|systemroot|windir|programfiles|appdata|temp|userprofile)%",
    r"[a-z]:\\(?:windows|winnt)\\(?:system32|syswow64)\\",
)
# Mail protocol commands after a line break: SMTP, IMAP and POP3 command injection.
MAIL_COMMANDS = any_of(
    r"[\r\n]\s*(?:mail\s+from|rcpt\s+to)\s*:",
    r"[\r\n]\s*(?:helo|ehlo)\s+[\w.-]+",
    r"[\r\n]\s*(?:data|quit|rset|noop)\s*(?:[\r\n]|$)",
    r"[\r\n]\s*[\w.]+\s+(?:login|select|examine|fetch|store|capability|logout|authenticate|"
    r"create|delete|rename|copy|uid|list|lsub|append)\s",
    r"[\r\n]\s*(?:user|pass|retr|dele|apop|uidl|top)\s+\S+",
    r"[\r\n]\s*(?:capability|logout|stat|quit)\s*$",
)
# SQLite's shell runs programs through its dot-commands.
SQLITE_SHELL = r"(?:^|[;\n])\s*\.(?:system|shell|import|output|once|load)\s"

# A value that is itself a command line starting with an absolute path to a binary: a parameter
# passed to system() or exec() (no separator is needed then).
DIRECT_COMMAND_PATH = r"^\s*(?:/usr)?(?:/local)?/s?bin/" + alt(UNIX_COMMANDS) + r"(?:$|\s)"
# Wrappers that run the command given after them.
COMMAND_WRAPPERS = ["time", "nohup", "strace", "timeout", "nice", "setsid", "env", "exec", "sudo"]
COMMAND_WRAPPERS += ["flock", "cpulimit", "stdbuf", "taskset", "ionice", "chroot", "nsenter"]
# A value that starts with a command that is not an English word and then an argument (an
# option, a path, a variable) is a command line, not a sentence.
DIRECT_COMMAND = any_of(
    DIRECT_COMMAND_PATH,
    # A leading backslash skips shell aliases and fools filters: \ls.
    r"^\s*\\" + alt(UNIX_COMMANDS) + COMMAND_END,
    r"^\s*(?:" + "|".join(COMMAND_WRAPPERS) + r")\s+(?:-\S+\s+)*" + alt(UNIX_COMMANDS) + r"\b",
    r"^\s*" + alt(UNAMBIGUOUS_COMMANDS) + r"(?:[\d.]*)\s+(?:-{1,2}[a-z]|/[\w.]|~/|\$[a-z]|\.\.?/)",
)
COMMAND_RULE = rule(
    "asm-932-100",
    "Command injection: a Unix or Windows command after a shell operator, shell expansions, "
    "PowerShell, Shellshock",
    type_="command_injection",
    cwe="77",
    capec="1000/152/248/88",
    conditions=[
        regex(
            any_of(
                UNIX_COMMAND,
                DIRECT_COMMAND,
                QUOTE_EVASION,
                GLOB_PATH,
                SHELL_EXPANSION,
                SHELLSHOCK,
                BRACE_EXPANSION,
                FORK_BOMB,
                HISTORY,
                ALIAS,
                SQLITE_SHELL,
                "(?i:"
                + any_of(
                    WINDOWS_COMMAND,
                    WINDOWS_FOR,
                    WINDOWS_IF,
                    WINDOWS_IF_COMPARE,
                    WINDOWS_SHELL,
                    POWERSHELL,
                    MAIL_COMMANDS,
                )
                + ")",
            ),
            *ARGS_AND_HEADERS,
            case_sensitive=True,
        )
    ],
)


# --- unrestricted file upload (932180, 933110) ---------------------------------------------------

# Server-side script extensions the web server would execute, and files that reconfigure it.
EXECUTABLE_EXTENSIONS = words(
    ["php", "php3", "php4", "php5", "php7", "php8", "pht", "phtml", "phar", "phps", "inc"],
    ["jsp", "jspx", "jspf", "jsw", "jsv", "asp", "aspx", "ascx", "ashx", "asmx", "asa", "cer"],
    ["cgi", "pl", "py", "rb", "sh", "shtml", "cfm", "cfml", "war", "exe", "dll", "bat", "ps1"],
)
SERVER_CONFIG_FILES = words([".htaccess", ".htpasswd", ".user.ini", "web.config", "php.ini"])
# Configuration files an upload could overwrite: the app's own, or a client's credentials.
UPLOAD_CONFIG_NAMES = words(
    ["wp-config", "config", "configuration", "settings", "localsettings", "database", "secrets"],
)
UPLOAD_FILENAME = any_of(
    r"\.\s*" + alt(EXECUTABLE_EXTENSIONS) + r"[\s.]*$",
    r"\.\s*" + alt(EXECUTABLE_EXTENSIONS) + r"(?:\.|%00|\x00|;)",
    r"(?:^|[\\/])" + alt(UPLOAD_CONFIG_NAMES) + r"[._]\s*(?:php|ya?ml|ini|env)\b",
    r"(?:^|[\\/])\.(?:boto|env|npmrc|pypirc|netrc|bashrc|profile|gitconfig|ssh)\b",
    r"(?:^|[\\/])" + alt(SERVER_CONFIG_FILES) + r"\s*$",
    # PHP session files: upload one named sess_<id> and the app loads it as a session.
    r"(?:^|[\\/])sess_[\w,-]{22,}$",  # PHP session ids are at least 22 characters
)
# Upload APIs that take the file name from a header instead of a multipart part.
UPLOAD_HEADERS = ["x-filename", "x-file-name", "x_filename", "x.filename", "x-upload-filename"]
UPLOAD_RULE = rule(
    "asm-932-180",
    "Upload of a server-side script or configuration file",
    type_="unrestricted_file_upload",
    cwe="434",
    capec="1000/225/122/17/650",
    conditions=[
        regex(
            UPLOAD_FILENAME,
            FILENAMES,
            *({"address": HEADERS, "key_path": [name]} for name in UPLOAD_HEADERS),
        )
    ],
)


# --- PHP code injection (933) --------------------------------------------------------------------

PHP_FUNCTIONS = words(
    # Run a program.
    ["system", "exec", "shell_exec", "passthru", "popen", "proc_open", "pcntl_exec"],
    # Run PHP code given as a string or callback.
    ["eval", "assert", "create_function", "call_user_func", "call_user_func_array"],
    ["preg_replace", "array_map", "array_filter", "usort", "uasort", "array_walk"],
    ["register_shutdown_function", "register_tick_function", "ob_start", "forward_static_call"],
    # Read, write and upload files: web shells, configuration theft.
    ["file_get_contents", "file_put_contents", "fopen", "fwrite", "fputs", "readfile"],
    ["highlight_file", "show_source", "move_uploaded_file", "unlink", "scandir", "opendir"],
    ["readdir", "symlink", "tempnam", "chmod"],
    # Decode an obfuscated payload before running it.
    ["base64_decode", "gzinflate", "gzuncompress", "gzdecode", "str_rot13", "convert_uudecode"],
    ["hex2bin", "bzdecompress", "strrev", "rawurldecode", "unpack"],
    # Objects and environment: deserialization, configuration, information.
    ["unserialize", "phpinfo", "getenv", "putenv", "ini_set", "ini_get", "dl", "extract"],
    ["parse_str", "get_defined_vars", "php_uname", "posix_getpwuid", "posix_kill"],
    ["set_include_path", "apache_setenv", "mb_send_mail"],
    # Network access: call home, pivot inside.
    ["fsockopen", "pfsockopen", "stream_socket_client", "curl_exec", "curl_init"],
    # Include another file: a local or remote one the attacker chose.
    ["include_once", "require_once"],
    # Dump variables: reconnaissance of the application's state.
    ["var_dump", "print_r", "var_export", "debug_zval_dump", "get_defined_constants"],
)
# PHP ignores comments and whitespace between a function name and its parentheses.
PHP_CALL_GAP = r"(?:\s|/\*.*?\*/|#[^\n]*\n|//[^\n]*\n)*"
# Function names that are English words count when the call looks like code: the parenthesis
# right after the name, or an argument that is a string or a variable. "The operating system
# (Windows)" is prose; "system ('id')" is not. eval() and assert() need an argument to do harm:
# "is eval() safe?" is a question.
PHP_WORD_FUNCTIONS = {"system", "exec", "extract", "unpack", "assert", "eval", "file"}
PHP_CALL = any_of(
    r"\b" + alt(set(PHP_FUNCTIONS) - PHP_WORD_FUNCTIONS) + PHP_CALL_GAP + r"\(",
    r"\b" + alt(PHP_WORD_FUNCTIONS - {"eval", "assert"}) + r"(?:\(|/\*|\s*\(\s*['\"$]|\s*\(\s*\))",
    r"\b(?:eval|assert)" + PHP_CALL_GAP + r"\(\s*[^\s)]",
)
PHP_WRAPPERS = words(
    # Read source or request bodies through PHP's stream wrappers.
    ["php://filter", "php://input", "php://stdin", "php://memory", "php://temp", "php://fd"],
    # Archives and data: include code hidden in an upload, or inline.
    ["phar://", "zip://", "data://", "data:text/plain", "expect://", "glob://", "zlib://"],
    ["compress.zlib://", "compress.bzip2://", "rar://", "ogg://", "ssh2.shell://", "ssh2.exec://"],
)
PHP_OPEN_TAG = any_of(r"<\?(?:php\b|=|\s)", r"<\?xml\s*:", r"\[/?php\]", r"<%=?\s")
# Superglobals give the injected code the attacker's own parameters.
PHP_VARIABLES = (
    r"\$_(?:get|post|request|cookie|server|files|env|session)\b|\$globals\b|\$http_raw_post_data"
)
# Serialized objects: O:8:"stdClass":1:{...} (object injection, POP chains).
PHP_SERIALIZED = r"\b[oc]:\d+:\"[\w\\]+\":\d+:\{"
# Calling a variable as a function: $f(...), ${'x'}(...), $a->$b(), $$x().
PHP_VARIABLE_CALL = any_of(
    r"\$\s*\{\s*['\"$]",  # ${'name'}: a variable variable
    r"\$\s+\{",
    r"\[\s*['\"]?\s*" + alt(PHP_FUNCTIONS) + r"\s*['\"]?\s*\]\s*\[\s*0\s*\]",  # [system][0](...)
    r"['\"][\w\\]*\\x[0-9a-f]{2}[\w\\]*['\"]\s*\(",  # "\x73ystem"(...)
    # A PHP variable starts with a letter or "_": "$5 (plus tax)" is a price.
    r"\$+[a-z_]\w*" + PHP_CALL_GAP + r"(?:\[[^\]]*\]" + PHP_CALL_GAP + r")*\(",
    r"\$\{[^}]+\}" + PHP_CALL_GAP + r"\(",
    r"\$+[a-z_]\w*\s*->\s*\$?\w+" + PHP_CALL_GAP + r"\(",
    r"\$_+\[[^\]]*\]\s*\(",
    # ("system")("id"), "system"(...): a string called as a function.
    r"\(\s*['\"]?\s*" + alt(PHP_FUNCTIONS) + r"\s*['\"]?\s*\)\s*\(",
    r"['\"]" + alt(PHP_FUNCTIONS) + r"['\"]\s*\(",
)
# php.ini directives that a request should never carry: loosen security, prepend code.
PHP_INI_DIRECTIVES = words(
    ["allow_url_include", "allow_url_fopen", "auto_prepend_file", "auto_append_file"],
    ["disable_functions", "open_basedir", "safe_mode", "register_globals", "display_errors"],
    ["error_log", "include_path", "extension_dir", "sendmail_path", "session.save_path"],
    ["session.auto_start", "session.use_trans_sid", "session.referer_check", "upload_tmp_dir"],
    ["opcache.", "mbstring.", "zend.", "pcre.", "xdebug.", "expose_php", "memory_limit"],
)
PHP_INI = r"(?:^|[\s;])" + alt(PHP_INI_DIRECTIVES) + r"[\w.]*\s*=\s*\S"

PHP_RULE = rule(
    "asm-933-100",
    "PHP code injection: PHP tags, wrappers, serialized objects, superglobals and dangerous "
    "functions",
    type_="php_code_injection",
    cwe="94",
    capec="1000/225/122/17/650",
    conditions=[
        regex(
            any_of(
                PHP_OPEN_TAG,
                r"\b" + alt(PHP_WRAPPERS),
                PHP_VARIABLES,
                PHP_SERIALIZED,
                PHP_CALL,
                PHP_VARIABLE_CALL,
                PHP_INI,
            ),
            *ARGS_AND_HEADERS,
        )
    ],
)


# --- SSRF (934110, 934190) -----------------------------------------------------------------------

# The regex preselects requests with a value that looks like a URL or host aimed inward; the
# detector decides. `http://localhost:3000/callback` is left out on purpose: native and
# development OAuth clients register such loopback redirects (RFC 8252).
URL_LIKE = VALUE_START + any_of(
    r"(?:[a-z][\w+.-]*:)?//(?:[^/@\s]*@)?[\[\d]",
    r"(?:[a-z][\w+.-]*:)?//(?:[^/@\s]*@)?[^\x00-\x7f]",
    r"(?:gopher|dict|file|ldaps?|tftp|netdoc|jar|php|phar|expect|sftp|ftp|smb|telnet|redis)s?:",
    r"(?:[a-z][\w+.-]*:)?(?://)?(?:[^/@\s]*@)?localhost(?:/|\.)",
    r"\\\\",
    IPV4,
    r"[\w.-]+\.(?:internal|localhost)\b",
    r"metadata\b",
)
SSRF_DETECTOR_RULE = rule(
    "asm-934-100",
    "Server-side request forgery to an internal or metadata address",
    type_="ssrf",
    cwe="918",
    capec="1000/225/115/664",
    conditions=[
        regex(URL_LIKE, QUERY, BODY, COOKIES),
        operator("ssrf_detector", QUERY, BODY, COOKIES),
    ],
)
# Cloud instance metadata services hand out credentials to whoever can reach them.
METADATA_HOSTS = words(
    ["169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254", "192.0.0.192"],
    ["metadata.google.internal", "metadata.goog", "metadata.azure.internal"],
    ["instance-data.ec2.internal", "metadata.tencentyun.com", "metadata.packet.net"],
)
METADATA_PATHS = words(
    ["/latest/meta-data", "/latest/user-data", "/latest/api/token", "/computemetadata/v1"],
    ["/metadata/instance", "/metadata/identity", "/opc/v1/", "/openstack/latest"],
)
INTERNAL_NAMES = alt(
    [
        r"localhost\d(?:\.localdomain\d?)?",
        r"ip6-(?:localhost|loopback)",
        r"ipv6-(?:localhost|loopback)",
        r"[\w.-]+\.(?:docker|containers)\.internal",
        r"kubernetes\.default(?:\.svc)?(?:\.cluster\.local)?",
        r"localtest\.me",
        r"lvh\.me",
        r"[\w.-]+\.localhost",
    ],
    escape=False,
)
# URL schemes that talk to internal services byte by byte (gopher to Redis) or read files.
INTERNAL_SCHEMES = words(["gopher", "dict", "ldap", "ldaps", "tftp", "netdoc"])
# 127.0.0.1 and 169.254.169.254 written as one number, in hex or octal: filters miss them.
OBFUSCATED_HOST = any_of(
    r"(?:0x[0-9a-f]{1,8}|0[0-7]{3,11}|\d{8,10})(?:[:/?#]|$)",
    r"(?:0x[0-9a-f]{1,2}|0[0-7]{1,3})\.",
    r"\[(?:0*:)*(?:ffff:)?(?:127\.|7f|a9fe|0*1\])",
    r"(?:127\.\d+|0)(?:[:/?#]|$)",
    r"0\.0\.0\.0\b",
)
SSRF_RULE = rule(
    "asm-934-110",
    "SSRF: cloud metadata endpoints, internal-only schemes and obfuscated internal addresses",
    type_="ssrf",
    cwe="918",
    capec="1000/225/115/664",
    conditions=[
        regex(
            any_of(
                r"(?:^|[/@\[=\s])" + alt(METADATA_HOSTS) + r"\b",
                r"(?:^|[\w\]])" + alt(METADATA_PATHS),
                VALUE_START + alt(INTERNAL_SCHEMES) + r"://",
                r"(?:https?|ftp)://(?:[^/@\s]*@)?" + OBFUSCATED_HOST,
                r"\bjar:(?:https?|file|ftp)",
                # Scheme-less internal names: hosts-file aliases and container DNS names.
                r"^\s*(?:[a-z][\w+.-]*://)?(?:[^/@\s]*@)?" + INTERNAL_NAMES + r"(?:[:/?#]|$)",
                r"^\s*(?:[a-z][\w+.-]*://)?(?:[^/@\s]*@)?localhost(?:\.localdomain)?\d?/",
                r"\burl:(?:file|https?)",
            ),
            *ARGS,
        )
    ],
)


# --- JavaScript / Node.js code injection (934100, 934130, 934160) --------------------------------

NODE_MODULES = words(["child_process", "fs", "net", "vm", "os", "http", "dgram", "worker_threads"])
JS_TRUTHY = any_of(
    r"true|[-+]?\s*(?:[1-9]\d*|infinity)|this|string|new\s+\w+",
    r"\[\s*\]|\{\s*\}|'[^']+'|\"[^\"]+\"",
)
JS_FALSY = r"(?:false|[-+]?\s*0|null|undefined|nan|``|''|\"\")"
NODE_SINKS = any_of(
    # require() of the modules that run programs or touch the file system.
    r"\brequire\s*\(\s*['\"`]" + alt(NODE_MODULES) + r"['\"`]\s*\)",
    r"\bchild_process\b",
    r"\bprocess\s*\.\s*(?:mainmodule|binding|env|exit|kill|dlopen|argv|cwd|chdir|kill)\b",
    r"\bglobal(?:this)?\s*\.\s*process\b",
    r"\b(?:process|require|module|global)\s*\[",
    r"\bmodule\s*\.\s*exports\s*=",
    r"__js_function",  # funcster's serialized-function marker
    # React Server Components payloads reaching the constructor (CVE-2025-55182).
    r"\$[\w@]*:(?:\w+:)*(?:constructor|__proto__|prototype)\b",
    r"\bmodule\s*\.\s*(?:constructor|require|children)\b",
    r"\brequire\s*\.\s*(?:main|cache|resolve)\b",
    # Reaching Function through any object: ''.constructor.constructor('code')().
    r"\bconstructor\s*\.\s*constructor\b",
    r"\bconstructor\s*\[\s*['\"]constructor",
    r"\bnew\s+function\s*\(",
    r"\b(?:execsync|spawnsync|execfile|execfilesync|spawn|fork)\s*\(",
    r"\.(?:readfilesync|readdirsync|writefilesync|readfile|unlinksync)\s*\(",
    r"\b(?:eval|settimeout|setinterval|setimmediate)\s*\(\s*['\"`]",
    # node-serialize's marker for a function to revive: an immediately invoked one is RCE.
    r"_\$\$nd_func\$\$_",
    # Denial of service: loops that never end in a single-threaded server.
    # A loop on a constant that is true: a truthy literal after an even number of "!", or a
    # falsy one after an odd number ("while(!true)" ends at once).
    r"\bwhile\s*\(+\s*(?:(?:!\s*!\s*)*" + JS_TRUTHY + r"|!\s*(?:!\s*!\s*)*" + JS_FALSY + r")"
    r"\s*\)+\s*(?:;|$|\{\s*\})",
    r"\bfor\s*\(\s*;\s*;\s*\)",
    r"\.repeat\s*\(\s*\d{7,}",
    r"\barray\s*\(\s*\d{8,}",
)
PROTOTYPE_POLLUTION = any_of(
    r"__proto__",
    r"\bconstructor\s*(?:\.|\[\s*['\"]?)\s*prototype\b",
    r"\[\s*['\"]?prototype['\"]?\s*\]",
)
JS_RULE = rule(
    "asm-934-130",
    "JavaScript / Node.js code injection and prototype pollution",
    type_="js_code_injection",
    cwe="94",
    capec="1000/152/242",
    conditions=[regex(any_of(NODE_SINKS, PROTOTYPE_POLLUTION), *ARGS_AND_HEADERS)],
)
PROTOTYPE_KEYS_RULE = rule(
    "asm-934-131",
    "Prototype pollution through a parameter or JSON key",
    type_="js_code_injection",
    cwe="94",
    capec="1000/152/242",
    keys_only=True,
    conditions=[
        regex(
            any_of(
                r"__proto__",
                r"^(?:constructor\s*[.\[]\s*)?prototype\b",
                r"\[\s*['\"]?prototype['\"]?\s*\]",
            ),
            QUERY,
            BODY,
            COOKIES,
        )
    ],
)


# --- server-side template injection and Perl/Ruby interpolation (934140, 934150, 934180) --------

# Python objects a Jinja2/Mako payload walks to reach os.system.
PYTHON_INTERNALS = words(
    ["__class__", "__mro__", "__base__", "__bases__", "__subclasses__", "__globals__"],
    ["__builtins__", "__import__", "__init__", "__getattribute__", "__dict__", "__reduce__"],
    ["cycler", "joiner", "lipsum", "request.application", "self._templatereference"],
    ["config.items", "url_for.__globals__", "get_flashed_messages"],
)
TEMPLATE_EXPRESSION = any_of(
    # Arithmetic in a template: {{7*7}}, ${7*7}, #{7*7}, <%= 7*7 %>, {7*7}.
    r"(?:\{\{|\$\{|#\{|\{%|<%=?|\{#|@\()\s*[\w'\".]*\s*[-+*/%]\s*[\w'\"]+\s*(?:\}\}?|%\}|%>|#\}|\))",
    r"\{%\s*(?:import|include|set|for|if|exec|debug|block|macro|python)\b",
    r"<%=?\s*(?:import|require|system|exec|eval|runtime|`)",
    r"#set\s*\(\s*\$\w+",
    r"\$class\.inspect|\$\w+\.getclass\(\)|\bclass\.forname\s*\(",
    r"freemarker\.template\.utility\.(?:execute|objectconstructor|jythonruntime)",
    r"<#assign\b",
    r"\?new\s*\(\s*\)",
    r"\{\{[^}]{0,40}(?:constructor|_self\.env|config\.items)",
    r"#\{[^}]{0,80}(?:runtime|exec|system|\.class|new\s)",
    r"\{php\}|\{system\s*\(",
)
# Perl's @{[ ... ]} interpolates the result of any code; qx{} and backticks run commands.
PERL_INTERPOLATION = r"@\{\s*\[[^\]]*\]\s*\}"
# Ruby's Kernel methods that run commands or code.
RUBY_CALLS = (
    r"\b(?:kernel|process|io|open3|file)\s*(?:\.|::)\s*"
    r"(?:exec|system|spawn|popen\d?|capture\d?|eval|open|read|write|fork|syscall)\b"
)
SSTI_RULE = rule(
    "asm-934-180",
    "Server-side template or interpolation injection: template expressions (Jinja, Twig, "
    "Freemarker, Velocity, ERB, EL) and Perl @{[ ]} that compute or reach objects",
    type_="ssti",
    cwe="1336",
    capec="1000/152/242",
    conditions=[
        regex(
            any_of(
                TEMPLATE_EXPRESSION,
                r"\b" + alt(PYTHON_INTERNALS),
                PERL_INTERPOLATION,
                RUBY_CALLS,
            ),
            *ARGS_AND_HEADERS,
        )
    ],
)


# --- XSS (941) -----------------------------------------------------------------------------------

# libinjection's XSS parser only runs on values that hold a tag, an event handler or a URL scheme.
XSS_LIBINJECTION_GATE = any_of(
    r"<\s*[a-z!/%]",  # a tag, a comment or a closing tag; not "<?xml" or "5 < 6"
    r"\bon[a-z]{3,}\s*=",
    r"(?:java|vb)script\s*:",
    r"['\"`]\s*(?:style|src|href|formaction)\s*=",
)
XSS_LIBINJECTION_RULE = rule(
    "asm-941-100",
    "XSS detected by libinjection",
    type_="xss",
    cwe="79",
    capec="1000/152/242/63/591",
    # Not the body: libinjection reads any XML document or WYSIWYG HTML (style attributes) as
    # XSS; the pattern rule below covers bodies.
    conditions=[
        regex(XSS_LIBINJECTION_GATE, QUERY, COOKIES, PATH_PARAMS),
        operator("is_xss", QUERY, COOKIES, PATH_PARAMS),
    ],
)
# Tags that run script or load active content, and attributes whose value becomes a URL or code.
ACTIVE_TAGS = words(
    ["script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "meta"],
    ["link", "style", "svg", "math", "form", "isindex", "xmp", "template", "portal", "xss"],
    ["import", "noscript", "marquee", "animate", "set", "handler", "listener", "vmlframe"],
)
EVENT_HANDLERS = (
    r"\bon(?:abort|activate|animation\w+|after\w+|auxclick|before\w+|begin|blur|bounce|cancel"
    r"|can\w+|change|click|close|context\w+|copy|cuechange|cut|dbl\w+|drag\w*|drop|duration\w+"
    r"|end|ended|error|focus\w*|formdata|fullscreen\w+|hashchange|help|input|invalid|key\w+"
    r"|load\w*|message|mouse\w+|move\w*|offline|online|page\w+|paste|pause|play\w*|pointer\w+"
    r"|popstate|progress|propertychange|readystatechange|repeat|reset|resize|scroll\w*|search"
    r"|seek\w+|select\w*|show|start|storage|submit|suspend|timeupdate|toggle|touch\w+"
    r"|transition\w+|unload|volumechange|waiting|wheel|zoom)\s*="
)
# Script sinks and the payloads' usual proof: reading the cookie, calling alert.
DOM_SINKS = any_of(
    r"\bdocument\s*\.\s*(?:cookie|domain|write|writeln|location|body\.innerhtml)\b",
    # window["alert"]: bracket access hides the name from filters.
    r"\b(?:window|top|self|parent|frames|globalthis)\s*\[\s*['\"`]",
    r"\b(?:alert|prompt|confirm)(?:\(|`)",
    r"\b(?:alert|prompt|confirm)\s*\.\s*(?:call|apply|bind)\b",
    r"\b(?:eval|atob|settimeout|setinterval|fromcharcode|unescape)\s*\(\s*[^\s)]",
    r"\binnerhtml\s*=|\bouterhtml\s*=|\.src\s*=",
    # Tagged templates call a function without parentheses: alert`1`, [].sort.call`${alert}`.
    r"\.\s*(?:call|apply|bind)\s*`",
    r"\b(?:document|window)\s*\.\s*(?:location|cookie)\s*$",
    r"\bdocument\s*\.\s*(?:createelement|queryselector|getelementbyid)\s*\(",
)
XSS_PATTERNS = any_of(
    r"</?(?:\w+:)?" + alt(ACTIVE_TAGS) + r"\b",
    r"<[a-z][^>]*" + EVENT_HANDLERS,
    EVENT_HANDLERS + r"\s*['\"]?[^'\"\s>]*\(",
    r"['\"/]\s*" + EVENT_HANDLERS,
    # "JavaScript: The Good Parts" is a book; "javascript:alert(1)" is a URL.
    r"(?:^|[\s\"'=(])(?:java|vb|live)\s*script\s*:(?:[^\s]|\s*[\w.]+\s*\()",
    r"\bdata\s*:\s*(?:text/html|image/svg\+xml|application/(?:x-)?javascript)",
    r"\b(?:src|href|action|formaction|data|srcdoc|xlink:href|background|dynsrc|lowsrc)\s*=\s*"
    r"['\"]?\s*(?:java|vb)script:",
    r"\bstyle\s*=[^>]*(?:expression\s*\(|behavior\s*:|-moz-binding|url\s*\(\s*['\"]?\s*javascript)",
    r"<[a-z][^>]*\s(?:srcdoc|formaction|xmlns)\s*=",
    r"\+adw-|\+ad4-",  # UTF-7 encoded < and >
    r"\[\s*\]\s*\[\s*\(\s*!\s*\[\s*\]|\(\s*!\s*\[\s*\]\s*\+\s*\[\s*\]\s*\)",  # JSFuck
    r"\{\{[^}]*constructor\.constructor",  # AngularJS sandbox escape
    DOM_SINKS,
)
XSS_RULE = rule(
    "asm-941-110",
    "XSS: script tags, event handlers, javascript: URIs and DOM sinks",
    type_="xss",
    cwe="79",
    capec="1000/152/242/63/591",
    conditions=[regex(XSS_PATTERNS, *ARGS_AND_HEADERS)],
)


# --- SQL injection (942) -------------------------------------------------------------------------

# libinjection's SQL tokenizer only runs on values with a quote, a comment, an operator or a
# keyword: plain words and numbers are never SQL injection.
# Calculator input ("log(100, 10)", "5 > 3 && 2 < 4") has neither, and libinjection reads such
# function calls and operators as SQL.
SQLI_LIBINJECTION_GATE = (
    r"['\"`\\#;]|--|/\*|\b(?:union|select|and|or|xor|not|like|rlike|regexp|sleep|benchmark|"
    r"waitfor|having|order|group|exec|insert|update|delete|drop|case|when|null|is|in|between|div)\b"
)
SQLI_LIBINJECTION_RULE = rule(
    "asm-942-100",
    "SQL injection detected by libinjection",
    type_="sql_injection",
    cwe="89",
    capec="1000/152/248/66",
    conditions=[
        regex(SQLI_LIBINJECTION_GATE, QUERY, BODY, COOKIES),
        operator("is_sqli", QUERY, BODY, COOKIES),
    ],
)
# SQL functions an attacker calls to read data, fingerprint the server, stall it or reach files.
SQL_FUNCTIONS = words(
    # Extract data character by character (blind injection).
    ["ascii", "char", "chr", "ord", "substring", "substr", "mid", "left", "right", "hex"],
    ["unhex", "bin", "conv", "length", "char_length", "instr", "locate", "position", "strcmp"],
    ["lpad", "rpad", "ltrim", "rtrim", "trim", "reverse", "replace", "insert", "soundex"],
    # Assemble many rows into one value (union- and error-based injection).
    ["concat", "concat_ws", "group_concat", "string_agg", "listagg", "array_agg", "xmlagg"],
    ["elt", "make_set", "export_set", "json_arrayagg", "json_objectagg"],
    # Fingerprint the database and the connection.
    ["database", "schema", "user", "current_user", "session_user", "system_user", "version"],
    ["connection_id", "last_insert_id", "row_count", "db_name", "host_name", "user_name"],
    ["suser_name", "suser_sname", "is_srvrolemember", "current_database", "pg_backend_pid"],
    # Make the server wait: time-based blind injection.
    ["sleep", "benchmark", "pg_sleep", "dbms_lock.sleep", "randomblob", "get_lock"],
    # Error-based extraction through XML and type errors.
    ["extractvalue", "updatexml", "xmltype", "exp", "floor", "rand", "geometrycollection"],
    ["polygon", "multipoint", "json_keys", "gtid_subset", "name_const", "convert", "cast"],
    # Files and the network: read files, make DNS or HTTP requests for out-of-band exfiltration.
    ["load_file", "pg_read_file", "pg_ls_dir", "lo_import", "lo_export", "utl_http.request"],
    ["utl_inaddr.get_host_address", "dbms_pipe.receive_message", "openrowset", "opendatasource"],
    ["xp_dirtree", "xp_fileexist", "sys_exec", "sys_eval", "dblink_connect", "copy_to"],
    ["load_extension", "lo_get", "lo_put", "pg_read_binary_file", "sqlite_version"],
    ["sqlite_compileoption_used", "sqlite_compileoption_get", "find_in_set", "sysdate"],
    # Hashing and compression: compare a secret or shrink it into an error message.
    ["md5", "sha1", "sha2", "compress", "uncompress", "to_base64", "from_base64", "unistr"],
    # Conditionals that branch on a guessed bit.
    ["if", "iif", "ifnull", "nullif", "coalesce", "isnull", "nvl", "decode", "case"],
)
# Function names that are also English words ("left", "version", "user", "case") count only when
# the parenthesis follows at once: "turn left (north)" is prose, "left(" is code.
# A method call (`str.replace(`) is JavaScript or Python, not SQL.
SQL_WORD_FUNCTIONS = words(
    ["char", "left", "right", "length", "position", "insert", "replace", "reverse", "trim"],
    ["convert", "cast", "decode", "floor", "exp", "rand", "ord", "bin", "hex", "mid", "conv"],
    ["elt", "sleep", "ascii", "polygon", "soundex", "locate", "instr", "substr", "chr", "nvl"],
    ["coalesce", "isnull", "if", "case", "database", "schema", "user", "version"],
)
# Fingerprinting functions take no argument: `version()`, `user()`; `user(id: 1)` is GraphQL.
SQL_NILADIC = words(
    ["database", "schema", "user", "version", "current_user", "session_user", "system_user"],
    ["connection_id", "last_insert_id", "row_count", "current_database", "pg_backend_pid"],
)
SQL_CALL = any_of(
    r"\b" + alt(set(SQL_FUNCTIONS) - set(SQL_WORD_FUNCTIONS)) + r"\s*\(",
    r"(?:^|[^\w.])" + alt(set(SQL_WORD_FUNCTIONS) - set(SQL_NILADIC) - {"if"}) + r"\(",
    r"\b" + alt(SQL_NILADIC) + r"\s*\(\s*\)",
)
# Catalog tables: where the schema is listed.
SQL_CATALOGS = words(
    ["information_schema", "mysql.user", "mysql.db", "sysobjects", "syscolumns", "sysusers"],
    ["sys.objects", "sys.tables", "sys.databases", "sys.sql_logins", "master..sysdatabases"],
    ["pg_catalog", "pg_tables", "pg_shadow", "pg_user", "pg_database", "all_tables"],
    ["all_tab_columns", "user_tables", "dba_users", "sqlite_master", "sqlite_schema"],
    ["msysobjects", "msysaccessobjects", "performance_schema", "sys.user_summary"],
    # Default databases and sample schemas that prove which server answers.
    ["msdb", "tempdb", "northwind", "schema_name", "table_name", "column_name"],
)
# MSSQL extended procedures that run commands or read the registry.
SQL_PROCEDURES = words(
    ["xp_cmdshell", "xp_regread", "xp_regwrite", "xp_servicecontrol", "xp_availablemedia"],
    ["xp_dirtree", "xp_fileexist", "xp_makecab", "xp_ntsec_enumdomains", "xp_terminate_process"],
    ["sp_oacreate", "sp_oamethod", "sp_executesql", "sp_makewebtask", "sp_addextendedproc"],
    ["sp_configure", "sp_addlogin", "sp_addsrvrolemember", "sp_password", "sp_execute"],
)
QUOTE = r"['\"`]"
# A quote or a number that ends the application's literal, then the attacker's SQL.
BOOLEAN_TAUTOLOGY = any_of(
    # ' OR 'a'='a, ' AND 1=1, ') OR TRUE, " || 1
    QUOTE
    + r"\s*\)*\s*(?:or|and|xor|\|\||&&)\s*(?:not\s+)?(?:"
    + QUOTE
    + r"?\w*"
    + QUOTE
    + r"?\s*(?:=|<>|!=|like\b|<|>|is\b|in\s*\()|true\b|false\b|null\b|\d|\(|"
    r"(?:sleep|benchmark|exists|select|if|case)\b)",
    # 1 OR x=y, 1) AND 1 LIKE 1: a number ends the literal; the comparison must follow.
    r"\d\s*\)*\s+(?:or|and|xor)\s+(?:not\s+)?[\w'\"]+\s*(?:=|<>|!=|\blike\b)",
    r"\b(?:or|and)\s+\d+\s*=\s*\d+\b",
    r"\b(?:or|and)\s+'[^']*'\s*=\s*'",
    QUOTE + r"\s*(?:=|<>|!=)\s*" + QUOTE,
)
# Where a statement an attacker appends starts: the value's start, or right after the quote,
# parenthesis, number or ";" that closed the application's own; not in the middle of prose.
STATEMENT_START = r"(?:^|[;'\"`)(]|\d\s|\*/)\s*"
UNION_SELECT = r"\bunion\b[\s(/*!]+(?:all\b[\s(]*|distinct\b[\s(]*)?select\b"
# A second statement after ";": the dangerous ones not covered by SQL_SYNTAX below.
STACKED_QUERY = any_of(
    r";\s*(?:shutdown\s*(?:--|#|;|$|with\b)|(?:exec|execute)\s+[@(\w])",
    r"['\"`]\s*;\s*(?:select|insert|update|delete|drop|exec|execute|declare|shutdown|create)\b",
)
# Comment out the rest of the application's query after closing its literal.
SQL_COMMENT_TAIL = any_of(r"['\"]\s*\)*\s*(?:--(?:\s|$)|#|/\*)", r"\d\s*\)*\s*--(?:\s|$)")
TIME_BASED = any_of(
    r"\bwaitfor\s+(?:delay|time)\s+['\"]",
    r"\b(?:sleep|pg_sleep|benchmark)\s*\(\s*\d",
    r"\bdbms_pipe\.receive_message\b",
)
SQL_SYNTAX = any_of(
    UNION_SELECT,
    # SELECT with a column list or a star: "select a size from the menu" has neither.
    STATEMENT_START + r"select\b[\s(]+(?:[\w.*@()'\"]+\s*,\s*)+[\w.*@()'\"]+[\s)]+from\b",
    STATEMENT_START + r"select\s+(?:top\s+\d+\s+)?(?:\*\s*from\b|\w+\s+from\s+\w+\s+where\b)",
    r"\bselect\s+(?:@@\w+|null\s*(?:,|from\b|--)|\d+\s*,\s*(?:\d+|null)\b)",
    r"\binto\s+(?:out|dump)file\b",
    r"\bload\s+data\s+(?:local\s+)?infile\b",
    r"\b(?:order|group)\s+by\s+\d+\b",
    r"\bhaving\b\s+[\w(]+\s*(?:=|<|>|like)",
    r"\bexec(?:ute)?\s+(?:master\.|sp_|xp_|immediate\b)",
    r"\bdeclare\s+@\w+",
    r"@@(?:version|datadir|hostname|basedir|tmpdir|servername|spid|identity|language)",
    r"/\*!\d*\s*\w",  # MySQL versioned comments
    r"\bchar\s*\(\s*\d+\s*(?:,\s*\d+\s*)+\)",  # a string assembled from character codes
    r"\b0x[0-9a-f]{8,}\b",  # a string written in hexadecimal
    STATEMENT_START
    + r"(?:alter|create|drop|truncate|rename)\s+(?:table|database|schema|user|view|function|"
    r"procedure|trigger|index|login)\b",
    STATEMENT_START + r"(?:insert\s+into|delete\s+from|update\s+\w+\s+set|replace\s+into)\b",
    r"\bmatch\s*\([^)]*\)\s*against\s*\(",
    r"\bcollate\s+\w+|\bset\s+names\s+\w+",
    r"\bprocedure\s+analyse\b",
    r"\bpg_\w+\s*\(",
    r"\bcase\s+when\b.{1,80}?\bthen\b",
    r"\bsounds\s+like\b",
    r"\b(?:rlike|regexp)\s+(?:binary\s+)?['\"(]",
    # PostgreSQL JSON operators spliced into a WHERE clause (JSON-based SQLi).
    r"::\s*(?:jsonb?|int\w*|bool\w*|text|bigint|varchar|numeric|double\s+precision|regclass|oid)\b",
    r"'\s*\?[|&]?\s*(?:'|array\s*\[)",  # JSON key-exists operators
    r"'\$(?:\.|\[)",  # a JSON path literal
    r"[`'\"\d]\s+as\s+[`'\"]?\w+[`'\"]?\s+from\b",  # a column alias, then FROM
    r"(?:'|\))\s*(?:@>|<@|\?\||\?&|#>>?|->>?|#-)\s*'",
    r"\bjson_(?:extract|value|query|contains|keys)\s*\(",
    r"\d+e\d*\s*(?:union|select|from|or|and)\b",  # scientific notation as a separator
)
SQLI_RULE = rule(
    "asm-942-110",
    "SQL injection: SQL syntax after a break-out, or a known SQLi technique",
    type_="sql_injection",
    cwe="89",
    capec="1000/152/248/66",
    conditions=[
        regex(
            any_of(
                BOOLEAN_TAUTOLOGY,
                SQL_SYNTAX,
                STACKED_QUERY,
                SQL_COMMENT_TAIL,
                TIME_BASED,
                SQL_CALL,
                r"\b" + alt(SQL_CATALOGS) + r"\b",
                r"\b" + alt(SQL_PROCEDURES) + r"\b",
            ),
            *ARGS_AND_HEADERS,
        )
    ],
)


# --- NoSQL and ORM operator injection (942290, 934210) -------------------------------------------

# MongoDB query operators: injected as an object, they turn an equality test into a predicate.
MONGO_OPERATORS = words(
    # Comparison: {"$ne": null} matches every user.
    ["ne", "eq", "gt", "gte", "lt", "lte", "in", "nin", "regex", "exists", "type", "mod"],
    # Logic and JavaScript execution on the server.
    ["where", "expr", "or", "and", "nor", "not", "function", "accumulator", "jsonschema"],
    # Aggregation stages that read other collections or rewrite results.
    ["lookup", "unionwith", "merge", "out", "group", "match", "elemmatch", "all", "size"],
)
MONGO_OPERATOR = r"\$" + alt(MONGO_OPERATORS) + r"\b"
# Django/ORM lookups: filtering on a secret column lets a client guess it letter by letter.
SECRET_FIELDS = words(["password", "passwd", "pwd", "secret", "token", "hash", "api_key", "otp"])
ORM_LOOKUPS = words(
    ["startswith", "istartswith", "endswith", "iendswith", "contains", "icontains", "regex"],
    ["iregex", "gt", "gte", "lt", "lte", "in", "range", "exact", "iexact", "isnull"],
)
ORM_SECRET_LOOKUP = r"\b\w*" + alt(SECRET_FIELDS) + r"\w*__" + alt(ORM_LOOKUPS) + r"\b"
# Following relations through a filter: user__groups__permissions__codename.
ORM_TRAVERSAL = r"\b[a-z]\w*__[a-z]\w*__[a-z]\w*"
NOSQL_KEYS_RULE = rule(
    "asm-942-290",
    "Query operator injection through a parameter name or JSON key: MongoDB operators, ORM "
    "lookups on secrets or across relations",
    type_="nosql_injection",
    cwe="943",
    capec="1000/152/248/676",
    keys_only=True,
    conditions=[
        regex(
            any_of(r"^" + MONGO_OPERATOR, ORM_SECRET_LOOKUP, ORM_TRAVERSAL),
            QUERY,
            BODY,
        )
    ],
)
NOSQL_RULE = rule(
    "asm-942-291",
    "NoSQL or ORM injection: MongoDB operators, JavaScript or ORM lookups in the URL or body",
    type_="nosql_injection",
    cwe="943",
    capec="1000/152/248/676",
    conditions=[
        regex(
            any_of(
                r"\[\s*" + MONGO_OPERATOR + r"\s*\]",
                r"['\"]\s*" + MONGO_OPERATOR + r"\s*['\"]\s*:",
                r"\$where\b",
                r"\bdb\s*\.\s*\w+\s*\.\s*(?:find|drop|remove|insert|update|aggregate)\w*\s*\(",
                r"\bthis\s*\.\s*\w+\s*(?:==|!=|\.match\s*\()",
                r"[?&]" + ORM_SECRET_LOOKUP + r"=",
                r"[?&]\w*" + ORM_TRAVERSAL + r"=",
            ),
            URI,
            BODY,
        )
    ],
)


# --- session fixation (943) ----------------------------------------------------------------------

# Session cookie names of common servers and frameworks: a link that sets one plants a session.
SESSION_NAMES = words(
    # Java servers.
    ["jsessionid", "jsessionidsso", "jwsession", "weblogicsession", "wl_session"],
    # PHP and its frameworks.
    ["phpsessid", "laravel_session", "ci_session", "cakephp", "symfony", "zend_session_id"],
    ["yii_session", "kohanasession", "fuelcid", "craftsessionid", "pmasession"],
    # .NET and classic ASP.
    ["asp.net_sessionid", "aspsessionid", ".aspnetcore.session", ".aspxauth"],
    # Python, Ruby, Node.js and Go frameworks.
    ["sessionid", "session_id", "session-id", "sid", "_session_id", "django_session"],
    ["_flask_session", "rack.session", "_rails_session", "connect.sid", "express.sid"],
    ["koa.sess", "koa:sess", "sails.sid", "next-auth.session-token", "play_session"],
    ["gorilla_session", "beegosessionid", "meteor_login_token", "shiny-token"],
    # ColdFusion.
    ["cfid", "cftoken", "cfglobals"],
)
SESSION_PARAMETER = r"[?&;](?:__(?:host|secure)-)?" + alt(SESSION_NAMES) + r"\w*="
# Setting a cookie from HTML or script in a parameter plants a session in the victim's browser.
COOKIE_SETTING = any_of(
    r"\.cookie\s*=",
    r"<\s*meta[^>]*http-equiv\s*=\s*['\"]?set-cookie",
    r"\.cookie\s*;\s*expires\s*=",
)
SESSION_RULE = rule(
    "asm-943-110",
    "Session fixation: session identifier passed in the query string of a request that "
    "followed a link",
    type_="session_fixation",
    confidence="0",
    cwe="384",
    capec="1000/225/21/593/61",
    conditions=[
        regex(SESSION_PARAMETER, URI),
        # Only a request that followed a link: the victim clicked what the attacker sent.
        regex(r"^(?:ht|f)tps?://", {"address": HEADERS, "key_path": ["referer"]}),
    ],
)
SESSION_COOKIE_SETTING_RULE = rule(
    "asm-943-100",
    "Session fixation: a parameter that sets a cookie through script or a meta tag",
    type_="session_fixation",
    cwe="384",
    capec="1000/225/21/593/61",
    conditions=[regex(COOKIE_SETTING, *ARGS)],
)


# --- Java code injection and Log4Shell (944) -----------------------------------------------------

# Log4j lookups: ${jndi:...} fetches and runs a remote class; the others read secrets or hide
# the word "jndi" from filters (${${lower:j}ndi:...}, ${${::-j}ndi:...}).
LOG4J_LOOKUPS = words(
    ["jndi", "env", "sys", "java", "ctx", "main", "date", "lower", "upper", "base64"],
    ["bundle", "k8s", "docker", "spring", "web", "log4j", "jvmrunargs", "sd", "map", "marker"],
    ["event", "hostname"],
)
JNDI = any_of(
    r"\$\{\s*jndi\s*:",
    r"\$\{[^}]{0,60}\$\{\s*(?:" + "|".join(LOG4J_LOOKUPS) + r"|::-|:-)",
    r"\$\{\s*(?:lower|upper|::-)\s*:?[^}]{0,10}\}",
    r"\bjndi\s*:\s*(?:ldaps?|rmi|dns|iiop|corba|nds|nis|http)\s*:",
    r"\$\{\s*(?:env|sys|java|ctx|main|bundle|k8s|docker|spring|jvmrunargs)\s*:[\w.:-]+\}",
)
# JDK packages whose classes a payload instantiates: process execution, reflection, class
# loading, file and network I/O, scripting, JNDI and JMX.
JDK_PACKAGES = words(
    ["java.lang", "java.io", "java.nio", "java.net", "java.rmi", "java.beans", "java.security"],
    ["java.util.concurrent", "java.util.zip", "javax.script", "javax.naming", "javax.management"],
    ["javax.xml.transform", "javax.el", "jdk.jshell", "jdk.nashorn", "sun.misc", "sun.reflect"],
    ["sun.rmi", "sun.net", "com.sun.org.apache", "com.sun.jndi", "com.sun.rowset", "com.sun.jmx"],
)
# Third-party libraries with well-known deserialization gadget chains or expression evaluators.
GADGET_PACKAGES = words(
    ["org.apache.commons", "org.apache.xalan", "org.apache.xbean", "org.apache.tomcat"],
    ["org.apache.catalina", "org.apache.naming", "org.apache.bcel", "org.apache.ibatis"],
    ["org.apache.log4j", "org.apache.shiro", "org.apache.wicket", "org.apache.myfaces"],
    ["org.apache.openjpa", "org.springframework", "org.codehaus.groovy", "groovy.lang", "bsh"],
    ["com.mchange", "org.hibernate", "org.jboss", "com.opensymphony", "ognl", "org.mozilla"],
    ["org.python", "clojure", "com.alibaba", "net.sf.json", "org.yaml.snakeyaml", "javassist"],
    ["com.thoughtworks.xstream", "weblogic", "com.bea", "com.tangosol", "com.rometools"],
    ["com.sun.syndication", "org.omg", "com.zaxxer.hikari", "oracle.jdbc", "com.caucho"],
)
# Gadget classes of the public deserialization chains (Commons Collections, Spring, Groovy,
# JDK): they only appear in a request when someone sends a payload.
GADGET_CLASSES = words(
    ["invokertransformer", "chainedtransformer", "constanttransformer"],
    ["instantiatetransformer", "clonetransformer", "instantiatefactory", "forclosure"],
    ["whileclosure", "prototypeclonefactory", "prototypeserializationfactory"],
    ["transformedmap", "lazymap", "tiedmapentry", "beancomparator", "templatesimpl"],
    ["annotationinvocationhandler", "badattributevalueexpexception", "jdbcrowsetimpl"],
    ["methodinvoketypeprovider", "methodclosure", "convertedclosure", "unicastref"],
    ["remoteobjectinvocationhandler", "combopooleddatasource", "hotswappabletargetsource"],
    ["tostringbean", "equalsbean", "signedobject", "jrmpclient", "jrmplistener"],
    ["commonsbeanutils", "commonscollections", "ysoserial", "mozillarhino", "jython"],
)
# Classes that run programs or load code, whatever package prefix the payload writes.
DANGEROUS_CLASSES = words(
    ["runtime", "processbuilder", "processimpl", "unixprocess", "scriptenginemanager"],
    ["urlclassloader", "classloader", "methodhandles", "invocationhandler"],
)
# A class name that is a whole value (a parameter, a key, an XML attribute or element): how
# polymorphic deserializers and bean decoders are told which class to build. A stack trace or
# prose that mentions java.lang.String has text around the name.
NAME_START = r"(?:^|[\"'>=])\s*"
NAME_END = r"\s*(?:$|[\"'<])"
JAVA_NAMES = any_of(
    NAME_START + alt(JDK_PACKAGES) + r"(?:\.[\w$]+)*" + NAME_END,
    NAME_START + alt(GADGET_PACKAGES) + r"(?:\.[\w$]+)*" + NAME_END,
    r"\bjava\.(?:[\w$]+\.)*" + alt(DANGEROUS_CLASSES) + r"\b",
    alt(GADGET_CLASSES),
)
JAVA_CALLS = any_of(
    # Running a program and reaching it through reflection.
    r"\bgetruntime\s*\(\s*\)\s*\.\s*exec\b",
    r"\bnew\s+(?:java\.lang\.)?processbuilder\b",
    r"\bclass\s*\.\s*forname\s*\(",
    r"\.\s*(?:getmethod|getdeclaredmethod|getdeclaredconstructor|getconstructor)\s*\(",
    r"\.\s*(?:newinstance|defineclass|loadclass)\s*\(",
    r"\.getclass\s*\(\s*\)\s*\.\s*(?:forname|getclassloader|getmethod)",
    r"\bgetenginebyname\s*\(",
    # OGNL (Struts): context manipulation and static calls.
    r"#_?memberaccess\b",
    r"#(?:context|application|request|session|parameters|attr)\s*\[",
    r"@[\w.]+@\w+\s*\(",
    r"%\{\s*\(?#",
    r"\(#\w+\s*=",
    # Spring EL: T(java.lang.Runtime), #{...}.
    r"\bt\s*\(\s*(?:java|javax|org|com|sun)\.",
    r"#\{\s*t\s*\(",
    # Spring4Shell: the class loader reached through data binding.
    r"\bclass\s*\.\s*(?:module\s*\.\s*)?classloader\b",
    # XStream: a dynamic proxy or an event handler as the XML root.
    r"<\s*(?:dynamic-proxy|java\.beans\.eventhandler|sorted-set|void\s+method)\b",
    # Java serialization: the stream magic in binary, hex and base64.
    r"\xac\xed\x00\x05|\baced0005|\brO0AB",
    # Polymorphic typing that names a class to instantiate (Jackson, fastjson).
    r"['\"]@type['\"]\s*:\s*['\"][\w.$]+",
    r"['\"]@class['\"]\s*:",
)
JAVA_RULE = rule(
    "asm-944-100",
    "Java code injection: JNDI lookups (Log4Shell), classes, gadgets and expression-language "
    "payloads",
    type_="java_code_injection",
    cwe="94",
    capec="1000/152/242",
    conditions=[regex(any_of(JNDI, JAVA_NAMES, JAVA_CALLS), *ARGS_AND_HEADERS)],
)
JAVA_KEYS_RULE = rule(
    "asm-944-111",
    "Java code injection: class names or gadgets in a parameter name, JSON key or cookie name",
    type_="java_code_injection",
    cwe="94",
    capec="1000/152/242",
    keys_only=True,
    conditions=[regex(any_of(JAVA_NAMES, JNDI), QUERY, BODY, COOKIES)],
)


# --- XML external entities -----------------------------------------------------------------------

XXE_RULE = rule(
    "asm-xxe-100",
    "XML external entity (XXE) declaration",
    type_="xxe",
    cwe="611",
    capec="1000/152/248/250",
    conditions=[
        regex(
            any_of(
                r"<!entity\s+%?\s*[\w.-]+\s+(?:system|public)\b",
                r"<!doctype\s+[\w:.-]+\s+(?:system|public)\s+['\"]",
                r"<!doctype\s[^>\[]*\[\s*<!entity",
                r"<\s*xi:include\b",
                r"%[\w.-]+;\s*\]>",
            ),
            BODY,
            QUERY,
        )
    ],
)


RULES = [
    SCANNER_RULE,
    SCANNER_HEADER_RULE,
    PROTOCOL_RULE,
    LDAP_RULE,
    LFI_RULE,
    UPLOAD_TRAVERSAL_RULE,
    RFI_RULE,
    COMMAND_RULE,
    UPLOAD_RULE,
    PHP_RULE,
    SSRF_DETECTOR_RULE,
    SSRF_RULE,
    JS_RULE,
    PROTOTYPE_KEYS_RULE,
    SSTI_RULE,
    XSS_LIBINJECTION_RULE,
    XSS_RULE,
    SQLI_LIBINJECTION_RULE,
    SQLI_RULE,
    NOSQL_KEYS_RULE,
    NOSQL_RULE,
    SESSION_RULE,
    SESSION_COOKIE_SETTING_RULE,
    JAVA_RULE,
    JAVA_KEYS_RULE,
    XXE_RULE,
]


def document() -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "metadata": {
            "rules_version": RULES_VERSION,
            "generated_by": "scripts/build_default_rules.py",
        },
        "rules": sorted(RULES, key=lambda item: item["id"]),
    }


def render() -> str:
    return json.dumps(document(), indent=1, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file on disk is not what we write"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is out of date: run scripts/build_default_rules.py",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

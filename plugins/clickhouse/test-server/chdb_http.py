"""ClickHouse's HTTP interface over chDB, for tests against a current ClickHouse release.

Debian packages ClickHouse 18.16, which the storage tests start as a real server. Kiln's SQL
must also hold on current releases, and chDB (`chdb-core` on PyPI) embeds one in-process, with
no server of its own. This adapter serves the part of the HTTP interface Kiln uses:

* `GET /ping`;
* `POST /` with a statement in the body, or an `INSERT … FORMAT RowBinary` in the `query`
  parameter and its rows in the body;
* other URL parameters applied as settings (`max_query_size`);
* the user and password from Basic authentication or the `user`/`password` parameters,
  refused as current servers do (HTTP 403, code 516);
* HTTPS beside HTTP when given a certificate and key.

Errors are answered with status 500 and the engine's message, which begins with `Code: N.` as
a server's does. Statements run one at a time. Data lives under `--path` and survives a restart.

    python3 chdb_http.py --port P --path DIR --user U --password W [--https-port P2 --cert C --key K]
"""

import argparse
import base64
import re
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chdb import session

AUTH_FAILED = (
    "Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
    "or there is no user with such name. (AUTHENTICATION_FAILED)"
)
INSERT = re.compile(r"INSERT INTO (\S+)\s*(?:\(([^)]*)\))?\s*FORMAT RowBinary\s*$", re.S)
NOT_SETTINGS = {"query", "user", "password", "database"}


class Engine:
    """One chDB session; statements run one at a time."""

    def __init__(self, path):
        self.session = session.Session(path)
        self.lock = threading.Lock()
        self.settings = {}

    def run(self, sql, settings):
        with self.lock:
            for name, value in settings.items():
                if self.settings.get(name) != value:
                    self.session.query("SET %s = %s" % (name, value))
                    self.settings[name] = value
            # A server's default output format; a statement's FORMAT clause overrides it.
            result = self.session.query(sql, "TabSeparated")
        return bytes(result.bytes()) if result is not None else b""

    def columns(self, table):
        """The columns an insert without a column list gives, with their types."""
        with self.lock:
            result = self.session.query("DESCRIBE TABLE %s FORMAT TabSeparated" % table)
        rows = [line.split("\t") for line in bytes(result.bytes()).decode().splitlines()]
        return [(r[0], r[1]) for r in rows if r[2] not in ("MATERIALIZED", "ALIAS", "EPHEMERAL")]


def insert_statement(engine, query, rows):
    """An `INSERT … FORMAT RowBinary` whose rows come in the body, as one statement.

    Rows cannot follow the statement inline: the parser skips whitespace after the format name,
    and a RowBinary row may begin with a whitespace byte (a string's length). So they are given
    to the `format` table function as an escaped literal, with the columns' types."""
    m = INSERT.match(query.strip())
    if not m:
        return query.encode() + b" " + rows
    table, listed = m.group(1), m.group(2)
    columns = engine.columns(table)
    types = dict(columns)
    if listed is None:
        names = [name for name, _ in columns]
    else:
        names = [c.strip().strip("`") for c in listed.split(",")]
    structure = ", ".join("`%s` %s" % (n, types[n]) for n in names)
    literal = "".join("\\x%02x" % b for b in rows)
    return (
        "INSERT INTO %s (%s) SELECT * FROM format(RowBinary, '%s', '%s')"
        % (table, ", ".join("`%s`" % n for n in names), structure.replace("'", "\\'"), literal)
    ).encode()


def handler(engine, user, password):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def credentials(self, params):
            given = self.headers.get("Authorization", "")
            if given.startswith("Basic "):
                u, _, p = base64.b64decode(given[6:]).decode().partition(":")
                return u, p
            return params.get("user", "default"), params.get("password", "")

        def serve(self):
            url = urllib.parse.urlparse(self.path)
            params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if url.path == "/ping":
                return self.answer(200, b"Ok.\n")
            u, p = self.credentials(params)
            if (u, p) != (user, password):
                return self.answer(403, AUTH_FAILED.format(user=u).encode())
            if "query" in params and self.command == "GET" and not body:
                body, query = params["query"].encode(), None
            else:
                query = params.get("query")
            settings = {k: v for k, v in params.items() if k not in NOT_SETTINGS}
            try:
                sql = insert_statement(engine, query, body) if query is not None else body
                self.answer(200, engine.run(sql, settings))
            except Exception as e:  # the engine's error, as a server answers it
                self.answer(500, str(e).encode())

        def answer(self, status, data):
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = serve
        do_POST = serve

    return Handler


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--path", required=True)
    a.add_argument("--user", default="default")
    a.add_argument("--password", default="")
    a.add_argument("--https-port", type=int)
    a.add_argument("--cert")
    a.add_argument("--key")
    args = a.parse_args()
    engine = Engine(args.path)
    h = handler(engine, args.user, args.password)
    servers = [ThreadingHTTPServer(("127.0.0.1", args.port), h)]
    if args.https_port:
        tls = ThreadingHTTPServer(("127.0.0.1", args.https_port), h)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    version = engine.run("SELECT version()", {}).decode().strip()
    print("ClickHouse %s on 127.0.0.1:%d" % (version, args.port), file=sys.stderr, flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()

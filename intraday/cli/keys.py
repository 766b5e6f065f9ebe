"""`keys` (the gateway's API keys) and `db migrate` (the audit schema)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from intraday.cli.common import _fail, _table
from intraday.config import get_settings


def cmd_keys_create(args: argparse.Namespace) -> None:
    from intraday import auth
    from intraday.audit import db

    settings = get_settings()
    if args.if_missing and args.out and args.out.is_file():
        with db.connect(settings.pg_dsn) as conn:
            try:
                held = auth.verify(conn, settings.api_key_pepper, args.out.read_text().strip())
                print(f"the key in {args.out} ({held.name}, {held.key_id}) is valid", file=sys.stderr)
                return
            except auth.AuthError as e:
                print(f"the key in {args.out} is not valid ({e}): making a new one", file=sys.stderr)
    try:
        scopes = auth.parse_scopes(args.scopes)
        with db.connect(settings.pg_dsn) as conn:
            key = auth.create_key(conn, settings.api_key_pepper, args.name, scopes, args.rate)
            conn.commit()
    except ValueError as e:
        _fail(str(e), 2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.touch(mode=0o600)
        args.out.write_text(key + "\n")
    print(f"key for {args.name}, scopes {', '.join(scopes)} (shown once; only its hash is stored):",
          file=sys.stderr)
    print(key)


def cmd_keys_list(args: argparse.Namespace) -> None:
    from intraday import auth
    from intraday.audit import db

    with db.connect(get_settings().pg_dsn) as conn:
        keys = auth.list_keys(conn)
    if args.json:
        print(json.dumps(keys, default=str, indent=2))
        return
    rows = []
    for k in keys:
        state = f"revoked {k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "active"
        used = f"{k['last_used_at']:%Y-%m-%d %H:%M}" if k["last_used_at"] else "never"
        rate = f"{k['rate_per_minute']}/min" if k["rate_per_minute"] else "default"
        rows.append([k["key_id"], k["name"], state, used, rate, ",".join(k["scopes"])])
    _table(["key id", "holder", "state", "last used", "rate", "scopes"], rows)


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from intraday import auth
    from intraday.audit import db

    with db.connect(get_settings().pg_dsn) as conn:
        revoked = auth.revoke(conn, args.key)
        conn.commit()
    if not revoked:
        _fail(f"no active key with id or name {args.key!r}", 2)
    print(f"revoked {', '.join(revoked)} (the gateway refuses them within "
          f"{get_settings().api_key_cache_seconds:.0f} s)")


def cmd_db_migrate(args: argparse.Namespace) -> None:
    import psycopg

    from intraday.audit import db

    # --wait: a one-shot container or Job started beside the database (or
    # its proxy) waits for it to take connections instead of failing first.
    deadline = time.monotonic() + args.wait  # the CLI refuses a negative one
    said = False
    while True:
        try:
            conn = db.connect(get_settings().pg_dsn)
            break
        except psycopg.OperationalError as e:
            if time.monotonic() >= deadline:
                raise
            if not said:
                reason = str(e).strip().splitlines()[0][:200]
                print(f"waiting up to {args.wait:.0f} s for the audit database: {reason}", file=sys.stderr)
                said = True
            time.sleep(1.0)
    with conn:
        db.migrate(conn)
    print("audit schema up to date")
